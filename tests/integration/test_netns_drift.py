"""Issue 12.3: drift inside an endpoint's namespace is seen by ``check`` and repaired by ``reconcile`` (and the
periodic full pass), as CNI's CHECK: addresses, default route, link state, MTU, MAC of its interface."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from netdtest import Host, in_ns, reach, running_host

# no periodic pass during the test: what repairs it is the reconcile the test asks for
QUIET = "reconcile_interval = 3600.0\n"


def _drifted(host: Host, what: str) -> None:
    check = host.ctl("check", check=False)
    assert check.returncode == 1 and what in check.stdout, check.stdout
    assert host.ctl("check", check=False).returncode == 1  # check changed nothing
    host.ctl("reconcile")
    assert host.ctl("check", check=False).returncode == 0


def test_namespace_side_drift_is_reported_and_repaired(tmp_path: Path) -> None:
    with running_host(tmp_path, config=QUIET) as host:
        host.api.ok(
            "POST",
            "/v1/networks",
            {
                "Name": "dn",
                "IPAM": {"Config": [{"Subnet": "172.30.99.0/24"}]},
                "Options": {"com.docker.network.driver.mtu": "1400"},
            },
        )
        for ns in ("d1", "d2"):
            host.api.ok("POST", "/v1/netns", {"Name": ns})
            host.api.ok("POST", "/v1/networks/dn/connect", {"Netns": ns})
        d2 = "172.30.99.3"
        assert host.ctl("check", check=False).returncode == 0
        d1 = host.ns("d1")

        in_ns(d1, "ip", "addr", "flush", "dev", "eth0")
        assert not reach(d1, d2, deadline=1)
        _drifted(host, "address missing in its namespace")
        assert reach(d1, d2)

        in_ns(d1, "ip", "route", "del", "default")
        _drifted(host, "IPv4 default route missing")
        assert reach(d1, host.outside_ip)

        in_ns(d1, "ip", "route", "replace", "default", "via", "172.30.99.3")  # the wrong gateway
        _drifted(host, "default route via 172.30.99.3 != 172.30.99.1")

        in_ns(d1, "ip", "link", "set", "eth0", "down")
        _drifted(host, "down in its namespace")
        assert reach(d1, d2)

        in_ns(d1, "ip", "link", "set", "eth0", "mtu", "1300")
        in_ns(d1, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:99")
        _drifted(host, "in its namespace")
        link = json.loads(in_ns(d1, "ip", "-j", "link", "show", "eth0").stdout)[0]
        assert link["mtu"] == 1400 and link["address"] == "02:42:ac:1e:63:02"
        assert reach(d1, d2) and reach(d1, host.outside_ip)


def test_the_periodic_pass_repairs_it(tmp_path: Path) -> None:
    with running_host(tmp_path, config="reconcile_interval = 1.0\n") as host:
        host.api.ok("POST", "/v1/networks", {"Name": "pn", "IPAM": {"Config": [{"Subnet": "172.30.100.0/24"}]}})
        host.api.ok("POST", "/v1/netns", {"Name": "p1"})
        host.api.ok("POST", "/v1/networks/pn/connect", {"Netns": "p1"})
        in_ns(host.ns("p1"), "ip", "addr", "flush", "dev", "eth0")
        in_ns(host.ns("p1"), "ip", "route", "del", "default", check=False)  # gone with the address already
        # no request: the timer's full pass repairs it (ping fails at once while there is no route: poll)
        deadline = time.monotonic() + 30
        while not reach(host.ns("p1"), host.outside_ip, deadline=1) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert reach(host.ns("p1"), host.outside_ip)
        assert '"reason": "timer"' in host.log_text() and "peer_repaired" in host.log_text()


def test_a_default_gateway_removed_by_sighup_leaves_the_endpoints(tmp_path: Path) -> None:
    """``default-gateway`` taken out of the config: SIGHUP's pass puts the bridge's own gateway back in the
    endpoints' namespaces (their route via the old one is drift inside the namespace)."""
    bip = '[default_bridge]\nbip = "10.124.0.1/24"\n'
    with running_host(tmp_path, config=bip + 'default-gateway = "10.124.0.254"\n') as host:
        host.api.ok("POST", "/v1/netns", {"Name": "d"})
        host.api.ok("POST", "/v1/networks/bridge/connect", {"Netns": "d"})
        routes = json.loads(in_ns(host.ns("d"), "ip", "-j", "route", "show", "default").stdout)
        assert [r["gateway"] for r in routes] == ["10.124.0.254"]
        host.extra_config = bip
        host.write_config()
        assert host.proc is not None
        host.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "config_reloaded" not in host.log_text():
            time.sleep(0.1)
        routes = json.loads(in_ns(host.ns("d"), "ip", "-j", "route", "show", "default").stdout)
        assert [r["gateway"] for r in routes] == ["10.124.0.1"]
        assert host.api.ok("GET", "/v1/netns/d")["Endpoints"][0]["Gateway"] == "10.124.0.1"
        assert host.ctl("check", check=False).returncode == 0
        assert reach(host.ns("d"), host.outside_ip)
