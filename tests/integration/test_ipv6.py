"""IPv6 and dual-stack bridge networks, in throw-away namespaces with real packets."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from ipaddress import IPv6Network
from pathlib import Path
from typing import Any

import pytest
from netdtest import Host, in_ns, ping, reach, running_host, source_seen_outside

from netd.core.ipam import ula_prefix


def _net6(host: Host, name: str, v6: str | None, v4: str | None = None, **opts: str) -> dict[str, Any]:
    cfgs = [{"Subnet": s} for s in (v4, v6) if s]
    host.api.ok(
        "POST", "/v1/networks", {"Name": name, "EnableIPv6": True, "IPAM": {"Config": cfgs}, "Options": opts}
    )
    return host.api.ok("GET", f"/v1/networks/{name}")  # type: ignore[no-any-return]


def _attach(host: Host, net: str, ns: str, **ipam: str) -> dict[str, Any]:
    host.api.ok("POST", "/v1/netns", {"Name": ns})
    body = {"Netns": ns, "EndpointConfig": {"IPAMConfig": ipam}}
    return host.api.ok("POST", f"/v1/networks/{net}/connect", body)  # type: ignore[no-any-return]


def _ip6(ep: dict[str, Any]) -> str:
    return str(ep["IPv6Address"]).split("/")[0]


def test_dual_stack_ping6_tcp_and_kernel_state(host: Host) -> None:
    net = _net6(host, "ds", "fd00:10::/64", "172.30.50.0/24")
    assert net["EnableIPv6"] is True
    a = _attach(host, "ds", "a")
    b = _attach(host, "ds", "b", IPv6Address="fd00:10::99")
    assert _ip6(b) == "fd00:10::99" and _ip6(a) == "fd00:10::2"
    assert reach(host.ns("a"), "fd00:10::99")
    assert reach(host.ns("a"), str(b["IPv4Address"]).split("/")[0])
    code = "import socket,sys; s=socket.socket(socket.AF_INET6); s.bind(('::',8080)); s.listen(1); s.accept()"
    srv = subprocess.Popen(["nsenter", f"--net={host.ns('b')}", "python3", "-c", code])
    try:
        time.sleep(0.3)
        r = in_ns(
            host.ns("a"),
            "python3",
            "-c",
            "import socket; socket.create_connection(('fd00:10::99', 8080), timeout=3).close()",
            check=False,
        )
        assert r.returncode == 0, r.stderr
    finally:
        srv.kill()
        srv.wait()
    # the kernel, read back: nodad addresses (not tentative), default v6 route, forwarding, accept_ra on the uplink
    addr = json.loads(in_ns(host.ns("a"), "ip", "-j", "-6", "addr", "show", "eth0", "scope", "global").stdout)[0]
    info = addr["addr_info"][0]
    assert info["local"] == "fd00:10::2" and not info.get("tentative")
    route = json.loads(in_ns(host.ns("a"), "ip", "-j", "-6", "route", "show", "default").stdout)[0]
    assert route["gateway"] == "fd00:10::1"
    assert in_ns(host.path, "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "1"
    assert in_ns(host.path, "sysctl", "-n", "net.ipv6.conf.uplink.accept_ra").stdout.strip() == "2"


def test_v6_isolation_and_icc_off(host: Host) -> None:
    _net6(host, "one", "fd00:11::/64")
    _net6(host, "two", "fd00:12::/64")
    _net6(host, "quiet", "fd00:13::/64", **{"com.docker.network.bridge.enable_icc": "false"})
    o1 = _attach(host, "one", "o1")
    _attach(host, "two", "t1")
    q1 = _attach(host, "quiet", "q1")
    _attach(host, "quiet", "q2")
    assert not ping(host.ns("t1"), _ip6(o1))
    assert not ping(host.ns("q2"), _ip6(q1))
    assert reach(host.ns("q2"), "fd00:13::1")


def test_nat66_and_routed_mode(host: Host) -> None:
    _net6(host, "natted", "fd00:20::/64")
    _attach(host, "natted", "n1")
    assert source_seen_outside(host, host.ns("n1"), v6=True) == host.uplink_ip6
    _net6(host, "routed", "fd00:21::/64", **{"com.docker.network.bridge.gateway_mode_ipv6": "routed"})
    r1 = _attach(host, "routed", "r1")
    in_ns(host.outside_path, "ip", "-6", "route", "add", "fd00:21::/64", "via", host.uplink_ip6)
    assert source_seen_outside(host, host.ns("r1"), v6=True, port=7778) == _ip6(r1)
    assert reach(host.outside_path, _ip6(r1))  # reachable from outside: routed, not NATed
    n1 = host.api.ok("GET", "/v1/networks/natted")["Containers"]
    in_ns(host.outside_path, "ip", "-6", "route", "add", "fd00:20::/64", "via", host.uplink_ip6)
    (ep,) = n1.values()
    assert not ping(host.outside_path, _ip6(ep))  # the NAT66 network is not open to the outside


def test_ipv6_only_network(host: Host) -> None:
    net = _net6(host, "only6", "fd00:30::/64", **{"com.docker.network.enable_ipv4": "false"})
    assert [c["Subnet"] for c in net["IPAM"]["Config"]] == ["fd00:30::/64"]
    a = _attach(host, "only6", "a")
    _attach(host, "only6", "b")
    assert a["IPv4Address"] == ""
    assert reach(host.ns("b"), _ip6(a))
    v4 = json.loads(in_ns(host.ns("a"), "ip", "-j", "-4", "addr", "show", "eth0").stdout)
    assert v4 == [] or v4[0].get("addr_info") == []


BAD_V6 = [
    ({"Subnet": "fd00:40::/129"}, 400, "not a valid CIDR"),
    ({"Subnet": "fd00:40::/64", "Gateway": "fd00:41::1"}, 400, "outside subnet"),
    ({"Subnet": "fd00:40::/127"}, 400, "/126 or shorter"),
    ({"Subnet": "fd00:40::1/64"}, 400, "did you mean fd00:40::/64"),
]


@pytest.mark.parametrize(("cfg", "status", "needle"), BAD_V6, ids=[c[2] for c in BAD_V6])
def test_bad_v6_input_changes_nothing(host: Host, cfg: dict[str, str], status: int, needle: str) -> None:
    kernel = host.kernel_snapshot()
    state = host.state_bytes()
    got, err = host.api.request(
        "POST", "/v1/networks", {"Name": "bad", "EnableIPv6": True, "IPAM": {"Config": [cfg]}}
    )
    assert got == status and needle in err["error"]["message"], err
    assert host.kernel_snapshot() == kernel
    assert host.state_bytes() == state


def test_ula_is_stable_and_avoids_host_routes(tmp_path: Path) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    prefix = ula_prefix(mid.read_text())
    first, second, third = list(prefix.subnets(new_prefix=64))[:3]
    with running_host(tmp_path, config=f'machine_id_file = "{mid}"\n', start=False) as host:
        in_ns(host.path, "ip", "-6", "route", "add", str(first), "via", host.outside_ip6)  # a "VPN" route
        host.start()
        net = _net6(host, "auto6", None)
        subnets = [c["Subnet"] for c in net["IPAM"]["Config"]]
        assert IPv6Network(subnets[1]) == second and str(second).startswith("fd")
        ep = _attach(host, "auto6", "u1")
        assert _ip6(ep) == str(second[2])
        assert reach(host.ns("u1"), str(second[1]))
        host.api.ok("POST", "/v1/networks/auto6/disconnect", {"Netns": "u1"})
        host.api.ok("DELETE", "/v1/networks/auto6")
        host.stop()
        host.start()  # same machine id, same choice after a restart
        again = _net6(host, "auto6b", None)
        assert IPv6Network(again["IPAM"]["Config"][1]["Subnet"]) == second
        other = _net6(host, "auto6c", None)
        assert IPv6Network(other["IPAM"]["Config"][1]["Subnet"]) == third


def test_reboot_restores_v6_and_sighup_enables_default_bridge_v6(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        _net6(host, "ds", "fd00:50::/64", "172.30.51.0/24")
        a = _attach(host, "ds", "a")
        _attach(host, "ds", "b")
        host.reboot()
        host.start()
        assert reach(host.ns("b"), _ip6(a))
        assert in_ns(host.path, "sysctl", "-n", "net.ipv6.conf.all.forwarding").stdout.strip() == "1"
        assert source_seen_outside(host, host.ns("a"), v6=True) == host.uplink_ip6
        # SIGHUP: turn IPv6 on for the default bridge without a restart
        host.extra_config = '[default_bridge]\nipv6 = true\nfixed-cidr-v6 = "fd00:60::/64"\n'
        host.write_config()
        assert host.proc is not None
        host.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            addrs = in_ns(host.path, "ip", "-6", "addr", "show", "netd0").stdout
            if "fd00:60::1/64" in addrs:
                break
            time.sleep(0.1)
        assert "fd00:60::1/64" in addrs, host.log_text()[-4000:]
        net = host.api.ok("GET", "/v1/networks/bridge")
        assert net["EnableIPv6"] is True
        assert [c["Subnet"] for c in net["IPAM"]["Config"]][1] == "fd00:60::/64"
        _attach(host, "bridge", "d6")
        assert reach(host.ns("d6"), "fd00:60::1")
