"""802.1q parents, ipvlan and dummy parents end to end, in the VM (this machine's kernel has none of them).

One daemon for the module (a start costs ~30 s under emulation).  The host's "physical" lan0 is a veth to an
underlay bridge ``seg`` that also carries a router (10.87.0.1) and two peers with VLAN sub-interfaces: peer50
answers 192.168.50.1 on VLAN 50, peer60 holds 192.168.50.2 on VLAN 60.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import netdtest
import pytest
from netdtest import Host, in_ns, ping, plug_into_segment, running_host, sh
from test_dns import dig

START_TIMEOUT = 300
ROUTER = "10.87.0.1"
NS_DNS = "127.0.0.11"


def reach(path: str, addr: str) -> bool:
    return netdtest.reach(path, addr, deadline=10)  # an emulated CPU: ARP and ND get longer


class Underlay:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.tag = secrets.token_hex(2)
        self.seg = f"ndt-vu-{self.tag}"
        self.peers = {50: f"ndt-v50-{self.tag}", 60: f"ndt-v60-{self.tag}"}

    def build(self) -> None:
        u = ("ip", "-n", self.seg)
        sh("ip", "netns", "add", self.seg)
        sh(*u, "link", "set", "lo", "up")
        sh(*u, "link", "add", "seg", "type", "bridge")
        sh(*u, "addr", "add", f"{ROUTER}/24", "dev", "seg")
        sh(*u, "link", "set", "seg", "up")
        for vid, ns in self.peers.items():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "add", "p", "type", "veth", "peer", "name", f"u{vid}", "netns", self.seg)
            sh(*u, "link", "set", f"u{vid}", "master", "seg", "up")
            sh("ip", "-n", ns, "link", "add", "link", "p", "name", f"p.{vid}", "type", "vlan", "id", str(vid))
            sh("ip", "-n", ns, "addr", "add", f"192.168.50.{1 if vid == 50 else 2}/24", "dev", f"p.{vid}")
            for dev in ("p", f"p.{vid}"):
                sh("ip", "-n", ns, "link", "set", dev, "up")
        self.wire()

    def wire(self) -> None:
        plug_into_segment(self.host.name, self.seg)

    def cleanup(self) -> None:
        for ns in (self.seg, *self.peers.values()):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Underlay]]:
    with running_host(tmp_path_factory.mktemp("vmhost"), start=False) as host:
        under = Underlay(host)
        try:
            under.build()
            host.start(wait=False)
            host.wait_ready(START_TIMEOUT)
            yield host, under
        finally:
            under.cleanup()


def _link(path: str, ifname: str) -> dict[str, Any]:
    return json.loads(in_ns(path, "ip", "-d", "-j", "link", "show", ifname).stdout)[0]  # type: ignore[no-any-return]


def _links(path: str) -> list[str]:
    return [ln["ifname"] for ln in json.loads(in_ns(path, "ip", "-j", "link").stdout)]


def _attach(host: Host, net: str, ns: str) -> dict[str, Any]:
    host.api.ok("POST", "/v1/netns", {"Name": ns})
    return host.api.ok("POST", f"/v1/networks/{net}/connect", {"Netns": ns})  # type: ignore[no-any-return]


def _ip(ep: dict[str, Any]) -> str:
    return str(ep["IPv4Address"]).split("/")[0]


def test_vlan_parent_is_created_tagged_shared_and_foreign_ones_are_left(lan: tuple[Host, Underlay]) -> None:
    host, _ = lan
    host.ctl(
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet=192.168.50.0/24",
        "--gateway=192.168.50.1",
        "--ip-range=192.168.50.128/25",
        "-o",
        "parent=lan0.50",
        "macvlan50",
    )
    sub = _link(host.path, "lan0.50")
    net = host.api.ok("GET", "/v1/networks/macvlan50")
    assert sub["linkinfo"]["info_kind"] == "vlan" and sub["linkinfo"]["info_data"]["id"] == 50
    assert sub["ifalias"] == f"netd:{net['Id']}" and "UP" in sub["flags"]
    ep = _attach(host, "macvlan50", "v1")
    assert reach(host.ns("v1"), "192.168.50.1")  # peer50's own .50 sub-interface answers: frames carry VLAN 50
    assert not ping(host.ns("v1"), "192.168.50.2")  # peer60 listens on VLAN 60 only
    assert _link(host.ns("v1"), "eth0")["address"] == ep["MacAddress"]
    # a second network on the same sub-interface shares it; removing it leaves the sub-interface to the first
    host.ctl("network", "create", "-d", "macvlan", "--subnet=192.168.51.0/24", "-o", "parent=lan0.50", "again50")
    host.ctl("network", "rm", "again50")
    assert "lan0.50" in _links(host.path)
    # a pre-existing sub-interface is used but never removed; the same VLAN under another name is refused
    sh("ip", "-n", host.name, "link", "add", "link", "lan0", "name", "lan0.70", "type", "vlan", "id", "70")
    sh("ip", "-n", host.name, "link", "add", "link", "lan0", "name", "v71", "type", "vlan", "id", "71")
    host.ctl("network", "create", "-d", "macvlan", "--subnet=192.168.70.0/24", "-o", "parent=lan0.70", "mine70")
    host.ctl("network", "rm", "mine70")
    assert "lan0.70" in _links(host.path)
    before = host.kernel_snapshot()
    r = host.ctl(
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet=192.168.71.0/24",
        "-o",
        "parent=lan0.71",
        "dup",
        check=False,
    )
    assert r.returncode != 0 and "VLAN 71 on lan0 already exists as v71" in r.stderr
    assert host.kernel_snapshot() == before


def test_ipvlan_l2_l3_and_dummy_parents(lan: tuple[Host, Underlay]) -> None:
    host, _ = lan
    host.ctl(
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.87.0.0/24",
        "-o",
        "parent=lan0",
        "-o",
        "ipvlan_mode=l2",
        "ipnet",
    )
    a = _attach(host, "ipnet", "i1")
    b = _attach(host, "ipnet", "i2")
    assert reach(host.ns("i1"), _ip(b)) and reach(host.ns("i2"), ROUTER)
    # names, from the resolver netd opens inside each ipvlan namespace (issue 12.9)
    assert a["Resolver"] == NS_DNS
    assert dig(host.ns("i1"), NS_DNS, "i2") == ("NOERROR", [_ip(b)])
    assert dig(host.ns("i2"), NS_DNS, "+tcp", "i1") == ("NOERROR", [_ip(a)])
    info = _link(host.ns("i1"), "eth0")["linkinfo"]
    assert info["info_kind"] == "ipvlan" and info["info_data"]["mode"] == "l2"
    # l3 without a parent: netd's dummy, endpoints route to each other through it, default route via the device
    host.ctl(
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet=10.88.0.0/24",
        "-o",
        "ipvlan_mode=l3",
        "-o",
        "ipvlan_flag=bridge",
        "routed",
    )
    net = host.api.ok("GET", "/v1/networks/routed")
    dummy = _link(host.path, "dm-" + net["Id"][:12])
    assert dummy["linkinfo"]["info_kind"] == "dummy" and dummy["ifalias"] == f"netd:{net['Id']}"
    c = _attach(host, "routed", "r1")
    d = _attach(host, "routed", "r2")
    assert reach(host.ns("r1"), _ip(d)) and reach(host.ns("r2"), _ip(c))
    assert dig(host.ns("r1"), NS_DNS, "r2") == ("NOERROR", [_ip(d)])
    assert dig(host.ns("r1"), NS_DNS, "i1")[0] == "NXDOMAIN"  # another network's name
    assert not ping(host.ns("r1"), ROUTER)  # a dummy parent goes nowhere
    info = _link(host.ns("r1"), "eth0")["linkinfo"]
    assert info["info_data"]["mode"] == "l3"
    assert "ipvlan  mode l3 bridge" in in_ns(host.ns("r1"), "ip", "-d", "link", "show", "eth0").stdout
    routes = json.loads(in_ns(host.ns("r1"), "ip", "-j", "route", "show", "default").stdout)
    assert routes[0]["dev"] == "eth0" and "gateway" not in routes[0]
    # the ipvlan flag reaches the kernel (pyroute2 lacks it; netd adds IFLA_IPVLAN_FLAGS)
    host.ctl("network", "create", "-d", "ipvlan", "--subnet=10.89.0.0/24", "-o", "ipvlan_flag=private", "priv")
    _attach(host, "priv", "q1")
    assert "ipvlan  mode l2 private" in in_ns(host.ns("q1"), "ip", "-d", "link", "show", "eth0").stdout
    host.ctl("netns", "rm", "q1")
    host.ctl("network", "rm", "priv")
    assert not [n for n in _links(host.path) if n.startswith("dm-") and n != dummy["ifname"]]
    assert a["MacAddress"] == ""  # ipvlan children share the parent's MAC address


def test_replay_after_reboot_then_removal(lan: tuple[Host, Underlay]) -> None:
    host, under = lan
    host.reboot()  # kill -9, the host namespace with lan0, lan0.50 and the dummy gone, /run emptied
    under.wire()
    host.start(wait=False)
    host.wait_ready(START_TIMEOUT)
    eps = {ep["Name"]: ep for ep in (e for ns in host.api.ok("GET", "/v1/netns") for e in ns["Endpoints"])}
    assert reach(host.ns("v1"), "192.168.50.1")  # lan0.50 recreated before its child
    assert reach(host.ns("i1"), _ip(eps["i2"])) and reach(host.ns("i1"), ROUTER)
    assert reach(host.ns("r1"), _ip(eps["r2"]))
    assert dig(host.ns("i1"), NS_DNS, "i2") == ("NOERROR", [_ip(eps["i2"])])  # the replay opened it again
    res = host.api.ok("POST", "/v1/reconcile")
    assert res["changes"] == 0 and res["errors"] == {}
    # the last network on netd's sub-interface goes: so does the sub-interface (lan0 itself stays)
    host.ctl("netns", "rm", "v1")
    host.ctl("network", "rm", "macvlan50")
    assert "lan0.50" not in _links(host.path) and "lan0" in _links(host.path)
    for ns in ("i1", "i2", "r1", "r2"):
        host.ctl("netns", "rm", ns)
    net = host.api.ok("GET", "/v1/networks/routed")
    host.ctl("network", "rm", "routed")
    host.ctl("network", "rm", "ipnet")
    assert "dm-" + net["Id"][:12] not in _links(host.path)
