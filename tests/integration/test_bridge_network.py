"""Bridge networks end to end: a real daemon in a test host namespace, real packets between namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from netdtest import Host, in_ns, ping, reach, running_host, source_seen_outside


def _net(host: Host, name: str, subnet: str | None = None, **kw: object) -> dict[str, object]:
    body: dict[str, object] = {"Name": name, **kw}
    if subnet:
        body["IPAM"] = {"Config": [{"Subnet": subnet}]}
    host.api.ok("POST", "/v1/networks", body)
    return host.api.ok("GET", f"/v1/networks/{name}")  # type: ignore[no-any-return]


def _attach(host: Host, net: str, ns: str, **cfg: object) -> dict[str, object]:
    if ns not in [n["Name"] for n in host.api.ok("GET", "/v1/netns")]:
        host.api.ok("POST", "/v1/netns", {"Name": ns})
    return host.api.ok("POST", f"/v1/networks/{net}/connect", {"Netns": ns, "EndpointConfig": cfg})  # type: ignore[no-any-return]


def _ip(ep: dict[str, object]) -> str:
    return str(ep["IPv4Address"]).split("/")[0]


def test_same_network_pings_and_networks_are_isolated(host: Host) -> None:
    _net(host, "a", "172.30.1.0/24")
    _net(host, "b", "172.30.2.0/24")
    a1 = _attach(host, "a", "a1")
    a2 = _attach(host, "a", "a2")
    b1 = _attach(host, "b", "b1")
    assert reach(host.ns("a1"), _ip(a2))
    assert reach(host.ns("a2"), _ip(a1))
    assert reach(host.ns("a1"), "172.30.1.1")  # the gateway on the bridge
    assert not ping(host.ns("b1"), _ip(a1))
    assert not ping(host.ns("a1"), _ip(b1))
    # Read the kernel back: the peer is eth0 in the netns with the allocated address and a default route.
    addr = json.loads(in_ns(host.ns("a1"), "ip", "-j", "addr", "show", "eth0").stdout)
    assert addr[0]["address"] == a1["MacAddress"]
    assert any(i["local"] == _ip(a1) for i in addr[0]["addr_info"])
    routes = json.loads(in_ns(host.ns("a1"), "ip", "-j", "route", "show", "default").stdout)
    assert routes[0]["gateway"] == "172.30.1.1"


def test_icc_off_blocks_same_network(host: Host) -> None:
    _net(host, "quiet", "172.30.3.0/24", Options={"com.docker.network.bridge.enable_icc": "false"})
    q1 = _attach(host, "quiet", "q1")
    _attach(host, "quiet", "q2")
    assert not ping(host.ns("q2"), _ip(q1))
    assert reach(host.ns("q2"), "172.30.3.1")  # the host itself stays reachable


def test_nat_to_outside_shows_the_host_address(host: Host) -> None:
    _net(host, "web", "172.30.4.0/24")
    _attach(host, "web", "w1")
    # MASQUERADE: the outside sees the host, not 172.30.4.x
    assert source_seen_outside(host, host.ns("w1")) == host.uplink_ip


def test_internal_network_has_no_way_out(host: Host) -> None:
    _net(host, "backend", "172.30.5.0/24", Internal=True)
    i1 = _attach(host, "backend", "i1")
    i2 = _attach(host, "backend", "i2")
    assert reach(host.ns("i1"), _ip(i2))
    assert not ping(host.ns("i1"), host.outside_ip)
    routes = json.loads(in_ns(host.ns("i1"), "ip", "-j", "route", "show", "default").stdout)
    assert routes == []
    assert i1["Gateway"] == ""


def test_ip_range_aux_address_and_static_ip(host: Host) -> None:
    host.api.ok(
        "POST",
        "/v1/networks",
        {
            "Name": "app",
            "IPAM": {
                "Config": [
                    {
                        "Subnet": "172.30.6.0/24",
                        "Gateway": "172.30.6.1",
                        "IPRange": "172.30.6.128/25",
                        "AuxiliaryAddresses": {"my-router": "172.30.6.128"},
                    }
                ]
            },
            "Options": {"com.docker.network.bridge.name": "br-app", "com.docker.network.driver.mtu": "1400"},
        },
    )
    e1 = _attach(host, "app", "r1")
    assert _ip(e1) == "172.30.6.129"  # first of the range, skipping the aux-address
    e2 = _attach(host, "app", "r2", IPAMConfig={"IPv4Address": "172.30.6.140"})
    assert _ip(e2) == "172.30.6.140"
    status, _err = host.api.request(
        "POST",
        "/v1/networks/app/connect",
        {"Netns": "r1", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "172.30.6.140"}}},
    )
    assert status == 409
    link = json.loads(in_ns(host.path, "ip", "-j", "-d", "link", "show", "br-app").stdout)[0]
    assert link["mtu"] == 1400 and link["linkinfo"]["info_kind"] == "bridge"
    assert reach(host.ns("r1"), "172.30.6.140")


def test_automatic_subnet_avoids_host_routes(tmp_path: Path) -> None:
    with running_host(tmp_path, start=False) as host:
        # "VPN" routes on the host covering the first pool subnets: netd must not reuse them.
        in_ns(host.path, "ip", "route", "add", "172.16.0.0/16", "via", host.outside_ip)
        in_ns(host.path, "ip", "route", "add", "172.17.5.0/24", "via", host.outside_ip)
        host.start()
        default = host.api.ok("GET", "/v1/networks/bridge")["IPAM"]["Config"][0]["Subnet"]
        net = _net(host, "auto")
        subnet = net["IPAM"]["Config"][0]["Subnet"]  # type: ignore[index]
        assert default == "172.18.0.0/16"
        assert subnet == "172.19.0.0/16"
        ep = _attach(host, "auto", "x1")
        assert _ip(ep) == "172.19.0.2"
        assert reach(host.ns("x1"), "172.19.0.1")


def test_address_exhaustion_is_a_clear_error(host: Host) -> None:
    _net(host, "tiny", "172.30.7.0/30")
    _attach(host, "tiny", "t1")
    host.api.ok("POST", "/v1/netns", {"Name": "t2"})
    before = host.kernel_snapshot()
    status, err = host.api.request("POST", "/v1/networks/tiny/connect", {"Netns": "t2"})
    assert status == 409 and "no free address" in err["error"]["message"]
    assert host.kernel_snapshot() == before


def test_disconnect_and_remove_release_everything(host: Host) -> None:
    _net(host, "tmp", "172.30.8.0/24")
    ep = _attach(host, "tmp", "d1")
    veth = str(ep["HostInterface"])
    assert in_ns(host.path, "ip", "link", "show", veth, check=False).returncode == 0
    status, err = host.api.request("DELETE", "/v1/networks/tmp")
    assert status == 409 and "disconnect them first" in err["error"]["message"]
    host.api.ok("POST", "/v1/networks/tmp/disconnect", {"Netns": "d1"})
    assert in_ns(host.path, "ip", "link", "show", veth, check=False).returncode != 0
    assert in_ns(host.ns("d1"), "ip", "link", "show", "eth0", check=False).returncode != 0
    # the address is free again
    again = _attach(host, "tmp", "d1")
    assert _ip(again) == _ip(ep)
    host.api.ok("POST", "/v1/networks/tmp/disconnect", {"Netns": "d1"})
    bridge = host.api.ok("GET", "/v1/networks/tmp")["Bridge"]
    host.api.ok("DELETE", "/v1/networks/tmp")
    assert in_ns(host.path, "ip", "link", "show", bridge, check=False).returncode != 0
    host.api.ok("DELETE", "/v1/netns/d1")
    assert not Path(host.ns("d1")).exists()


def test_foreign_namespace_endpoint_is_pruned_when_it_goes(host: Host, tmp_path: Path) -> None:
    _net(host, "rt", "172.30.9.0/24")
    # A "container runtime" namespace: not netd's, held open by a process.
    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        path = f"/proc/{proc.pid}/ns/net"
        own = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 5
        while os.stat(path).st_ino == own and time.monotonic() < deadline:  # until unshare has switched
            time.sleep(0.02)
        ep = host.api.ok("POST", "/v1/networks/rt/connect", {"NetnsPath": path})
        assert reach(path, "172.30.9.1")
        assert ep["Name"] == path
    finally:
        proc.kill()
        proc.wait()
    host.api.ok("POST", "/v1/reconcile")
    assert host.api.ok("GET", "/v1/networks/rt")["Containers"] == {}
    assert in_ns(host.path, "ip", "link", "show", str(ep["HostInterface"]), check=False).returncode != 0
    # and its address is free again
    host.api.ok("POST", "/v1/netns", {"Name": "n2"})
    again = host.api.ok("POST", "/v1/networks/rt/connect", {"Netns": "n2"})
    assert again["IPv4Address"] == ep["IPv4Address"]


def test_reconcile_twice_changes_nothing(host: Host) -> None:
    _net(host, "idem", "172.30.10.0/24")
    _attach(host, "idem", "p1")
    host.api.ok("POST", "/v1/reconcile")
    before = host.kernel_snapshot()
    res = host.api.ok("POST", "/v1/reconcile")
    assert res["changes"] == 0 and res["errors"] == {}
    status = host.api.ok("GET", "/v1/status")
    assert status["reconcile"]["in_sync"] is True
    assert host.kernel_snapshot() == before


def test_drift_is_repaired(host: Host) -> None:
    _net(host, "heal", "172.30.11.0/24")
    ep = _attach(host, "heal", "h1")
    in_ns(host.path, "ip", "link", "del", str(ep["HostInterface"]))
    host.api.ok("POST", "/v1/reconcile")
    assert reach(host.ns("h1"), "172.30.11.1")
    in_ns(host.path, "nft", "flush", "ruleset")

    deadline = time.monotonic() + 5
    # netd's rules are back: "table inet netd" (nftables) or "chain NETD-FORWARD" (iptables-nft)
    while time.monotonic() < deadline and "netd" not in in_ns(host.path, "nft", "list", "ruleset").stdout.lower():
        time.sleep(0.1)
    assert "netd" in in_ns(host.path, "nft", "list", "ruleset").stdout.lower()
    assert host.api.ok("GET", "/v1/status")["reconcile"]["repairs"] >= 1


def test_cli_end_to_end(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        out = host.ctl(
            "network",
            "create",
            "-d",
            "bridge",
            "--subnet",
            "172.30.12.0/24",
            "--gateway",
            "172.30.12.1",
            "--ip-range",
            "172.30.12.128/25",
            "--aux-address",
            "my-router=172.30.12.129",
            "-o",
            "com.docker.network.bridge.name=br-cli",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=true",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "app",
        ).stdout
        assert len(out.strip()) == 64
        host.ctl("netns", "create", "web")
        host.ctl("network", "connect", "--ip", "172.30.12.140", "--alias", "www", "app", "web")
        inspect = json.loads(host.ctl("network", "inspect", "app").stdout)[0]
        assert inspect["Name"] == "app" and inspect["Driver"] == "bridge"
        cfg = inspect["IPAM"]["Config"][0]
        assert cfg == {
            "Subnet": "172.30.12.0/24",
            "Gateway": "172.30.12.1",
            "IPRange": "172.30.12.128/25",
            "AuxiliaryAddresses": {"my-router": "172.30.12.129"},
        }
        (ep,) = inspect["Containers"].values()
        assert ep["Name"] == "web" and ep["IPv4Address"] == "172.30.12.140/24"
        assert "app" in host.ctl("network", "ls").stdout
        assert json.loads(host.ctl("status", "--format", "json").stdout)["endpoints"] == 1
        bad = host.ctl("network", "create", "--subnet", "10.0.0.0/33", "bad", check=False)
        assert bad.returncode != 0 and "subnet" in bad.stderr and bad.stderr.count("\n") == 1
        host.ctl("network", "disconnect", "app", "web")
        host.ctl("network", "rm", "app")
        host.ctl("netns", "rm", "web")
        names = [n["Name"] for n in json.loads(host.ctl("network", "ls", "--format", "json").stdout)]
        assert names == ["bridge", "host", "none"]  # only the default network is left (and Docker's host, none)
