"""Issue 12.2: the default route of a namespace with several networks is desired state.

Disconnecting the network that carries it hands it to the next one's gateway (internal networks excluded);
``--gw-priority`` chooses which network carries it (highest wins, ties: the first connected)."""

from __future__ import annotations

import json
from pathlib import Path

from netdtest import Host, in_ns, reach, running_host


def _net(host: Host, name: str, subnet: str, **kw: object) -> None:
    host.api.ok("POST", "/v1/networks", {"Name": name, "IPAM": {"Config": [{"Subnet": subnet}]}, **kw})


def _default(host: Host, ns: str) -> list[tuple[str, str]]:
    routes = json.loads(in_ns(host.ns(ns), "ip", "-j", "route", "show", "default").stdout)
    return [(r.get("gateway", ""), r["dev"]) for r in routes]


def test_disconnecting_the_carrier_hands_the_default_route_over(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        _net(host, "na", "172.30.93.0/24")
        _net(host, "ni", "172.30.94.0/24", Internal=True)
        _net(host, "nb", "172.30.95.0/24")
        host.api.ok("POST", "/v1/netns", {"Name": "mm"})
        for net in ("na", "ni", "nb"):
            host.api.ok("POST", f"/v1/networks/{net}/connect", {"Netns": "mm"})
        assert _default(host, "mm") == [("172.30.93.1", "eth0")]
        host.api.ok("POST", "/v1/networks/na/disconnect", {"Netns": "mm"})
        # the internal network is skipped: nb's gateway takes over, at once (not at the next full pass)
        assert _default(host, "mm") == [("172.30.95.1", "eth2")]
        eps = {e["Network"]: e for e in host.api.ok("GET", "/v1/netns/mm")["Endpoints"]}
        assert eps["nb"]["Gateway"] == "172.30.95.1" and eps["ni"]["Gateway"] == ""
        assert host.ctl("check", check=False).returncode == 0
        assert reach(host.ns("mm"), host.outside_ip)  # out through nb's NAT
        # the last routable one goes: no default route, nothing else changes
        host.api.ok("POST", "/v1/networks/nb/disconnect", {"Netns": "mm"})
        assert _default(host, "mm") == []
        assert host.ctl("check", check=False).returncode == 0


def test_gw_priority_chooses_the_carrier(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        _net(host, "pa", "172.30.96.0/24")
        _net(host, "pb", "172.30.97.0/24")
        _net(host, "pc", "172.30.98.0/24")
        host.api.ok("POST", "/v1/netns", {"Name": "gp"})
        host.ctl("network", "connect", "pa", "gp")
        host.ctl("network", "connect", "--gw-priority", "10", "pb", "gp")  # higher: takes it over
        assert _default(host, "gp") == [("172.30.97.1", "eth1")]
        host.ctl("network", "connect", "--gw-priority", "10", "pc", "gp")  # a tie: the first connected keeps it
        assert _default(host, "gp") == [("172.30.97.1", "eth1")]
        eps = {e["Network"]: e for e in host.api.ok("GET", "/v1/netns/gp")["Endpoints"]}
        assert eps["pb"]["GwPriority"] == 10 and eps["pb"]["Gateway"] == "172.30.97.1"
        assert eps["pa"]["Gateway"] == "" and eps["pc"]["Gateway"] == ""
        host.api.ok("POST", "/v1/networks/pb/disconnect", {"Netns": "gp"})
        assert _default(host, "gp") == [("172.30.98.1", "eth2")]  # the next highest
        assert host.ctl("check", check=False).returncode == 0
        assert reach(host.ns("gp"), host.outside_ip)
        bad = host.api.request(
            "POST", "/v1/networks/pa/connect", {"Netns": "gp", "EndpointConfig": {"GwPriority": "high"}}
        )
        assert bad[0] == 400 and "GwPriority" in json.dumps(bad[1])


def test_one_namespace_under_two_spellings_has_one_default_route(tmp_path: Path) -> None:
    """A netd netns connected by name to one network and by its path (``--netns-path``) to another is one
    namespace: one carrier, one default route (not one per spelling)."""
    with running_host(tmp_path) as host:
        _net(host, "sa", "172.30.86.0/24")
        _net(host, "sb", "172.30.87.0/24")
        host.api.ok("POST", "/v1/netns", {"Name": "two"})
        host.api.ok("POST", "/v1/networks/sa/connect", {"Netns": "two"})
        host.api.ok("POST", "/v1/networks/sb/connect", {"NetnsPath": host.ns("two")})
        assert _default(host, "two") == [("172.30.86.1", "eth0")]
        assert host.ctl("check", check=False).returncode == 0
        # the carrier leaves: the path-spelled endpoint takes the route over
        host.api.ok("POST", "/v1/networks/sa/disconnect", {"Netns": "two"})
        assert _default(host, "two") == [("172.30.87.1", "eth1")]
        # and a higher priority under the other spelling takes it back
        host.api.ok("POST", "/v1/networks/sa/connect", {"Netns": "two", "EndpointConfig": {"GwPriority": 5}})
        assert _default(host, "two") == [("172.30.86.1", "eth0")]
        assert host.ctl("check", check=False).returncode == 0
