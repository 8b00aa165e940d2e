"""The cheap firewall check (issue 14): it lists nothing while nobody has written to the packet filter, and it
still sees a foreign edit that is not a flush (nf_tables generation id; legacy: x_tables counts and sizes).

Backend level: the listing is replaced by one that fails, so a True answer proves the shortcut was taken.
Daemon level: a targeted edit of netd's own objects made after the shortcut is armed is repaired within 2 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path
from typing import Any

import pytest
from fwtopo import NetnsLoop, Topology, sh
from netdtest import in_ns, running_host
from test_firewall_daemon import emulate_docker, traffic_ok, two_endpoints

from netd.core.model import DesiredState, Endpoint, IpamConfig, Network, PortMapping
from netd.firewall.base import FirewallBackend
from netd.firewall.iptables import IptablesBackend
from netd.firewall.nftables import NftablesBackend
from netd.firewall.rules import build_ruleset

pytestmark = pytest.mark.integration

BACKENDS: dict[str, Callable[[], FirewallBackend]] = {
    "nftables": NftablesBackend,
    "iptables-nft": lambda: IptablesBackend("nft"),
    "iptables-legacy": lambda: IptablesBackend("legacy"),
}
# a foreign command that edits netd's objects without flushing anything
FOREIGN = {
    "nftables": ["nft", "add", "rule", "inet", "netd", "forward", "counter"],
    "iptables-nft": ["iptables-nft", "-w", "-A", "NETD-FORWARD", "-j", "RETURN"],
    "iptables-legacy": ["iptables-legacy", "-w", "-A", "NETD-FORWARD", "-j", "RETURN"],
}


def _state() -> DesiredState:
    ipam = [IpamConfig(subnet=ip_network("10.90.1.0/24"), gateway=ip_address("10.90.1.1"))]
    net = Network(id="aaaa000000000001", name="a", bridge="br-a", ipam=ipam)
    return DesiredState(networks={"a": net})


def _no_listing(*_args: Any) -> Any:
    raise AssertionError("the check listed the tables although nothing was written")


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, FirewallBackend]]:
    b = BACKENDS[request.param]()
    try:
        yield request.param, b
    finally:
        close = getattr(b, "close", None)
        if close is not None:
            close()


def test_check_lists_nothing_until_a_foreign_write(
    topo: Topology, host_loop: NetnsLoop, backend: tuple[str, FirewallBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, fw = backend
    rs = build_ruleset(_state())
    host_loop.run(fw.apply(rs))
    assert host_loop.run(fw.in_sync(rs))  # a comparison: arms the shortcut
    listing = "_observe" if kind == "nftables" else "_save_all"
    with monkeypatch.context() as m:
        m.setattr(fw, listing, _no_listing)
        for _ in range(3):
            assert host_loop.run(fw.in_sync(rs))
    sh("ip", "netns", "exec", topo.host, *FOREIGN[kind])
    assert not host_loop.run(fw.in_sync(rs))  # the foreign rule is seen: a full comparison
    host_loop.run(fw.apply(rs))
    assert host_loop.run(fw.in_sync(rs))
    host_loop.run(fw.remove_all())


def test_a_foreign_edit_before_a_port_delta_is_still_seen(
    topo: Topology, host_loop: NetnsLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nftables: a foreign rule added after the check armed its shortcut, then a published port added (an
    element delta that applies fine on top of it): the next check must still compare, and see the rule."""
    fw = NftablesBackend()
    try:
        st = _ports_state(1)
        host_loop.run(fw.apply(build_ruleset(st)))
        assert host_loop.run(fw.in_sync(build_ruleset(st)))
        sh("ip", "netns", "exec", topo.host, *FOREIGN["nftables"])
        more = build_ruleset(_ports_state(2))
        listed = []
        original = fw._observe
        monkeypatch.setattr(fw, "_observe", lambda: listed.append(1) or original())
        host_loop.run(fw.apply(more))  # the delta path: elements only
        assert not host_loop.run(fw.in_sync(more))
        assert listed
        host_loop.run(fw.remove_all())
    finally:
        fw.close()


def _ports_state(n: int) -> DesiredState:
    st = _state()
    eps = {
        f"e{i}": Endpoint(
            id=f"e{i}",
            network="aaaa000000000001",
            netns=f"e{i}",
            ifname="eth0",
            host_ifname=f"ve{i}",
            mac="02:00:00:00:00:01",
            ipv4=ip_interface(f"10.90.1.{10 + i}/24"),
            ports=[PortMapping(host_port=9000 + i, container_port=80)],
        )
        for i in range(n)
    }
    return DesiredState(networks=st.networks, endpoints=eps)


@pytest.mark.parametrize("backend_name", ["nftables", "iptables"])
def test_foreign_edit_after_the_check_is_armed_is_repaired(tmp_path: Path, backend_name: str) -> None:
    config = f'[firewall]\nbackend = "{backend_name}"\n'
    with running_host(tmp_path, config=config, start=False) as host:
        if backend_name == "iptables":
            emulate_docker(host)  # FORWARD policy DROP: netd's missing accept breaks traffic
        host.start()
        two_endpoints(host)
        assert traffic_ok(host)
        time.sleep(2.5)  # at least one 1 s check compared and found the tables in sync: the shortcut is armed
        repairs = host.api.ok("GET", "/v1/status")["reconcile"]["firewall_repairs"]
        if backend_name == "nftables":  # the dispatch into the networks' chains goes: isolation is lost
            in_ns(host.path, "nft", "flush", "chain", "inet", "netd", "forward")
        else:  # netd's accepts and isolation go
            in_ns(host.path, "iptables", "-w", "-F", "NETD-FORWARD")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if host.api.ok("GET", "/v1/status")["reconcile"]["firewall_repairs"] > repairs:
                break
            time.sleep(0.1)
        assert host.api.ok("GET", "/v1/status")["reconcile"]["firewall_repairs"] > repairs
        assert traffic_ok(host)
