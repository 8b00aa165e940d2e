"""macvlan networks end to end on this kernel: a real daemon in a test host namespace whose "physical"
interface ``lan0`` is a veth to an underlay namespace (the L2 segment) with a router on it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from netdtest import Host, in_ns, ping, plug_into_segment, reach, running_host, sh

ROUTER_IP = "10.86.0.1"


class Underlay:
    """The segment behind the host's ``lan0``: a bridge in its own namespace with a router address on it."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.name = f"ndt-u-{secrets.token_hex(3)}"
        self.path = f"/run/netns/{self.name}"

    def wire(self) -> None:
        """(Re)plug lan0: after a simulated reboot the host namespace comes back without it."""
        if not Path(self.path).exists():
            sh("ip", "netns", "add", self.name)
            u = ("ip", "-n", self.name)
            sh(*u, "link", "set", "lo", "up")
            sh(*u, "link", "add", "seg", "type", "bridge")
            sh(*u, "addr", "add", f"{ROUTER_IP}/24", "dev", "seg")
            sh(*u, "link", "set", "seg", "up")
        plug_into_segment(self.host.name, self.name)

    def hairpin(self, on: bool) -> None:
        sh("ip", "-n", self.name, "link", "set", "lan0p", "type", "bridge_slave", "hairpin", "on" if on else "off")

    def cleanup(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[tuple[Host, Underlay]]:
    with running_host(tmp_path) as host:
        under = Underlay(host)
        try:
            under.wire()
            yield host, under
        finally:
            under.cleanup()


def _create(host: Host, name: str, subnet: str = "10.86.0.0/24", **opts: str) -> dict[str, object]:
    body = {
        "Name": name,
        "Driver": opts.pop("driver", "macvlan"),
        "IPAM": {"Config": [{"Subnet": subnet, "Gateway": subnet.rsplit(".", 1)[0] + ".1"}]},
        "Options": opts,
    }
    host.api.ok("POST", "/v1/networks", body)
    return host.api.ok("GET", f"/v1/networks/{name}")  # type: ignore[no-any-return]


def _attach(host: Host, net: str, ns: str, **cfg: object) -> dict[str, object]:
    if ns not in [n["Name"] for n in host.api.ok("GET", "/v1/netns")]:
        host.api.ok("POST", "/v1/netns", {"Name": ns})
    return host.api.ok("POST", f"/v1/networks/{net}/connect", {"Netns": ns, "EndpointConfig": cfg})  # type: ignore[no-any-return]


def _ip(ep: dict[str, object]) -> str:
    return str(ep["IPv4Address"]).split("/")[0]


def _link(path: str, ifname: str) -> dict[str, object]:
    return json.loads(in_ns(path, "ip", "-d", "-j", "link", "show", ifname).stdout)[0]  # type: ignore[no-any-return]


def test_bridge_mode_endpoints_reach_each_other_and_the_router(lan: tuple[Host, Underlay]) -> None:
    host, _ = lan
    before = in_ns(host.path, "nft", "list", "ruleset").stdout
    host.ctl(
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet=10.86.0.0/24",
        "--gateway=10.86.0.1",
        "-o",
        "parent=lan0",
        "pub_net",
    )
    a = _attach(host, "pub_net", "a")
    b = _attach(host, "pub_net", "b")
    assert reach(host.ns("a"), _ip(b))
    assert reach(host.ns("b"), _ip(a))
    assert reach(host.ns("a"), ROUTER_IP)
    # read the kernel back: a macvlan child of lan0 in bridge mode, netd's MAC and address, default via --gateway
    link = _link(host.ns("a"), "eth0")
    assert link["linkinfo"]["info_kind"] == "macvlan"  # type: ignore[index]
    assert link["linkinfo"]["info_data"]["mode"] == "bridge"  # type: ignore[index]
    assert link["address"] == a["MacAddress"]
    assert link["ifalias"] == f"netd:{a['EndpointID']}"
    routes = json.loads(in_ns(host.ns("a"), "ip", "-j", "route", "show", "default").stdout)
    assert routes[0]["gateway"] == ROUTER_IP
    # no NAT and no bridge filtering for a macvlan network: the physical network routes
    assert in_ns(host.path, "nft", "list", "ruleset").stdout == before
    assert "bridge" not in in_ns(host.path, "ip", "-o", "link", "show", "type", "bridge").stdout
    inspect = host.api.ok("GET", "/v1/networks/pub_net")
    assert inspect["Driver"] == "macvlan" and inspect["Options"] == {"parent": "lan0"}
    # disconnect removes the child from the namespace; network rm leaves lan0 alone
    host.ctl("network", "disconnect", "pub_net", "b")
    assert in_ns(host.ns("b"), "ip", "link", "show", "eth0", check=False).returncode != 0
    host.ctl("netns", "rm", "a")
    host.ctl("network", "rm", "pub_net")
    assert _link(host.path, "lan0")["operstate"] == "UP"


def test_private_and_vepa_modes(lan: tuple[Host, Underlay]) -> None:
    host, under = lan
    _create(host, "priv", macvlan_mode="private", parent="lan0")
    p1 = _attach(host, "priv", "p1")
    _attach(host, "priv", "p2")
    assert not ping(host.ns("p2"), _ip(p1))  # private: no traffic between children, even through the wire
    assert reach(host.ns("p2"), ROUTER_IP)
    assert _link(host.ns("p1"), "eth0")["linkinfo"]["info_data"]["mode"] == "private"  # type: ignore[index]
    host.ctl("netns", "rm", "p1")
    host.ctl("netns", "rm", "p2")
    host.ctl("network", "rm", "priv")
    _create(host, "vepa", macvlan_mode="vepa", parent="lan0")
    v1 = _attach(host, "vepa", "v1")
    _attach(host, "vepa", "v2")
    assert not ping(host.ns("v2"), _ip(v1))  # vepa: child to child goes out to the switch, which does not hairpin
    under.hairpin(True)
    assert reach(host.ns("v2"), _ip(v1))  # a reflective relay (hairpin) brings it back
    assert reach(host.ns("v2"), ROUTER_IP)


def test_passthru_takes_the_parent_for_one_endpoint(lan: tuple[Host, Underlay]) -> None:
    host, _ = lan
    _create(host, "pt", macvlan_mode="passthru", parent="lan0")
    _attach(host, "pt", "t1")
    assert reach(host.ns("t1"), ROUTER_IP)
    host.api.ok("POST", "/v1/netns", {"Name": "t2"})
    status, err = host.api.request("POST", "/v1/networks/pt/connect", {"Netns": "t2"})
    assert status == 409 and "passthru" in err["error"]["message"]
    status, err = host.api.request(
        "POST", "/v1/networks", {"Name": "other", "Driver": "macvlan", "Options": {"parent": "lan0"}}
    )
    assert status == 409 and "passthru" in err["error"]["message"]


def test_host_access_shim_reaches_the_endpoints(lan: tuple[Host, Underlay]) -> None:
    host, _ = lan
    net = _create(host, "ha", parent="lan0", host_access="true")
    ep = _attach(host, "ha", "h1")
    shim_ip = net["IPAM"]["Config"][0]["AuxiliaryAddresses"]["netd-host-access"]  # type: ignore[index]
    assert shim_ip == "10.86.0.254"
    assert reach(host.path, _ip(ep))  # the host itself, through the shim
    shims = [
        ln
        for ln in json.loads(in_ns(host.path, "ip", "-d", "-j", "link").stdout)
        if ln.get("ifalias") == f"netd:{net['Id']}"
    ]
    assert len(shims) == 1 and shims[0]["linkinfo"]["info_kind"] == "macvlan"
    host.ctl("netns", "rm", "h1")
    host.ctl("network", "rm", "ha")
    assert f"netd:{net['Id']}" not in in_ns(host.path, "ip", "-o", "link").stdout
    assert "10.86.0" not in in_ns(host.path, "ip", "route").stdout


def test_ip_range_aux_address_and_static_ip(lan: tuple[Host, Underlay]) -> None:
    host, _ = lan
    host.ctl(
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet=192.168.32.0/24",
        "--ip-range=192.168.32.128/25",
        "--gateway=192.168.32.254",
        "--aux-address=my-router=192.168.32.129",
        "-o",
        "parent=lan0",
        "macnet32",
    )
    first = _attach(host, "macnet32", "m1")
    second = _attach(host, "macnet32", "m2", IPAMConfig={"IPv4Address": "192.168.32.10"})
    assert _ip(first) == "192.168.32.128"  # from the range: .128 first, the aux .129 skipped next
    third = _attach(host, "macnet32", "m3")
    assert _ip(third) == "192.168.32.130"
    assert _ip(second) == "192.168.32.10"
    assert reach(host.ns("m2"), _ip(third))


def test_bad_input_changes_nothing(lan: tuple[Host, Underlay]) -> None:
    host, _ = lan
    _create(host, "taken", "10.86.90.0/24", parent="lan0")
    sh("ip", "-n", host.name, "link", "add", "brx", "type", "bridge")
    sh("ip", "-n", host.name, "link", "add", "portx", "type", "veth", "peer", "name", "porty")
    sh("ip", "-n", host.name, "link", "set", "portx", "master", "brx")
    before = host.kernel_snapshot()
    state_before = host.api.ok("GET", "/v1/networks")
    cases = [
        ({"parent": "nosuch0"}, 404, "does not exist"),
        ({"parent": "nosuch0.50"}, 404, "nosuch0 for VLAN 50 does not exist"),
        ({"parent": "lan0.4095"}, 400, "1-4094"),
        ({"parent": "lan0.0"}, 400, "1-4094"),
        ({"parent": "a-very-long-name0"}, 400, "1-15 bytes"),
        ({"parent": "lan0", "macvlan_mode": "bridged"}, 400, "bridge, private, vepa, passthru"),
        ({"parent": "lan0", "ipvlan_mode": "l2"}, 400, "unknown option"),
        ({"parent": "portx", "macvlan_mode": "passthru"}, 409, "port of bridge brx"),
        ({"parent": "portx"}, 409, "port of bridge brx"),
        ({"parent": "lan0", "host_access": "maybe"}, 400, "true or false"),
    ]
    for opts, code, text in cases:
        status, err = host.api.request(
            "POST",
            "/v1/networks",
            {
                "Name": "bad",
                "Driver": "macvlan",
                "Options": opts,
                "IPAM": {"Config": [{"Subnet": "10.86.91.0/24"}]},
            },
        )
        assert status == code and text in err["error"]["message"], (opts, status, err)
    status, err = host.api.request(
        "POST",
        "/v1/networks",
        {
            "Name": "bad",
            "Driver": "macvlan",
            "Options": {"parent": "lan0"},
            "IPAM": {"Config": [{"Subnet": "10.86.90.128/25"}]},
        },
    )
    assert status == 409 and "overlaps network 'taken'" in err["error"]["message"]
    status, err = host.api.request(
        "POST",
        "/v1/networks",
        {
            "Name": "bad",
            "Driver": "ipvlan",
            "Options": {"parent": "lan0"},
            "IPAM": {"Config": [{"Subnet": "10.86.92.0/24"}]},
        },
    )
    assert status == 409 and "macvlan and ipvlan cannot share a parent" in err["error"]["message"]
    assert host.kernel_snapshot() == before
    assert host.api.ok("GET", "/v1/networks") == state_before


def test_replay_after_reboot(lan: tuple[Host, Underlay]) -> None:
    host, under = lan
    _create(host, "pub", parent="lan0", host_access="true")
    a = _attach(host, "pub", "a")
    b = _attach(host, "pub", "b")
    host.reboot()  # netd killed, the host namespace and everything in it gone, /run emptied
    under.wire()  # the "hardware" comes back before netd starts
    host.start()
    assert reach(host.ns("a"), _ip(b))
    assert reach(host.ns("b"), ROUTER_IP)
    assert reach(host.path, _ip(a))  # host_access came back too
    assert _link(host.ns("a"), "eth0")["address"] == a["MacAddress"]
    # a second start finds nothing to change
    host.stop()
    before = host.kernel_snapshot()
    host.start()
    res = host.api.ok("POST", "/v1/reconcile")
    assert res["changes"] == 0 and res["errors"] == {}
    assert host.kernel_snapshot() == before
    # drift: a child deleted behind netd's back comes back on the next reconcile
    in_ns(host.ns("a"), "ip", "link", "del", "eth0")
    res = host.api.ok("POST", "/v1/reconcile")
    assert res["changes"] == 1 and res["errors"] == {}
    assert reach(host.ns("a"), _ip(b))
