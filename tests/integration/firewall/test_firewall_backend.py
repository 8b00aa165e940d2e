"""Behaviour of the firewall backends on a real kernel, proved with real packets (root; see conftest.py).

The same suite runs against every backend (``backend`` is parametrized), so backends cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from typing import Any

import pytest
from fwtopo import NetnsLoop, Topology, dual_stack_state, sh

from netd.core.model import DesiredState, IpamConfig, Network
from netd.core.ruleset import Ruleset
from netd.firewall.base import FirewallBackend
from netd.firewall.rules import build_ruleset
from netd.firewall.select import make_backend

pytestmark = pytest.mark.integration

NET_A = "aaaa000000000001"
NET_B = "bbbb000000000002"


def desired(*, a: dict[str, Any] | None = None, b: dict[str, Any] | None = None) -> DesiredState:
    def net(net_id: str, name: str, bridge: str, n: int, kw: dict[str, Any]) -> Network:
        ipam = [IpamConfig(subnet=ip_network(f"10.90.{n}.0/24"), gateway=ip_address(f"10.90.{n}.1"))]
        return Network(id=net_id, name=name, bridge=bridge, ipam=ipam, **kw)

    nets = [net(NET_A, "a", "br-a", 1, a or {}), net(NET_B, "b", "br-b", 2, b or {})]
    return DesiredState(networks={n.name: n for n in nets})


class Driver:
    """Runs a backend's coroutines on the loop inside the host namespace."""

    def __init__(self, loop: NetnsLoop, backend: FirewallBackend) -> None:
        self.loop = loop
        self.backend = backend

    def apply(self, state: DesiredState | Ruleset) -> None:
        rs = state if isinstance(state, Ruleset) else build_ruleset(state)
        self.loop.run(self.backend.apply(rs))

    def in_sync(self, state: DesiredState | Ruleset) -> bool:
        rs = state if isinstance(state, Ruleset) else build_ruleset(state)
        return self.loop.run(self.backend.in_sync(rs))

    def remove_all(self) -> None:
        self.loop.run(self.backend.remove_all())


def _driver(kind: str, loop: NetnsLoop) -> Iterator[Driver]:
    backend = make_backend(kind)
    try:
        yield Driver(loop, backend)
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()


@pytest.fixture(params=["nftables", "iptables"])
def fw(request: pytest.FixtureRequest, host_loop: NetnsLoop) -> Iterator[Driver]:
    """Every backend: the traffic tests must pass the same way on each."""
    yield from _driver(request.param, host_loop)


@pytest.fixture
def nft_fw(host_loop: NetnsLoop) -> Iterator[Driver]:
    """The nftables backend, for tests that read its tables back (iptables: test_iptables_backend.py)."""
    yield from _driver("nftables", host_loop)


def machine_tables() -> str:
    return sh("nft", "list", "tables").stdout


# ------------------------------------------------------------------------------------------------ namespaces


def test_backend_writes_into_the_namespace_of_its_thread(topo: Topology, nft_fw: Driver) -> None:
    had_netd = "table inet netd" in machine_tables()
    nft_fw.apply(desired())
    assert "table inet netd" in topo.nft("list", "tables")
    if not had_netd:
        assert "table inet netd" not in machine_tables()
    host_ino = os.stat(f"/run/netns/{topo.host}").st_ino
    assert nft_fw.loop.netns_ino() == host_ino
    assert nft_fw.backend.describe().get("netns", f"net:[{host_ino}]") == f"net:[{host_ino}]"


# ------------------------------------------------------------------------------------------------ traffic


@pytest.mark.parametrize("br_netfilter", [True, False], ids=["br_nf", "no_br_nf"])
def test_same_network_and_isolation(topo: Topology, fw: Driver, br_netfilter: bool) -> None:
    topo.set_br_netfilter(br_netfilter)
    fw.apply(desired())
    assert topo.ping(topo.c1, "10.90.1.3")  # same network (bridged; with br_nf it crosses inet forward too)
    assert topo.ping(topo.c1, "10.90.1.1")  # own gateway: INPUT, untouched
    assert not topo.ping(topo.c1, "10.90.2.2")  # a -> b
    assert not topo.ping(topo.c3, "10.90.1.2")  # b -> a
    assert topo.ping(topo.c3, "10.90.100.2")  # outbound still fine


@pytest.mark.parametrize("br_netfilter", [True, False], ids=["br_nf", "no_br_nf"])
def test_icc_off_blocks_same_network(topo: Topology, fw: Driver, br_netfilter: bool) -> None:
    topo.set_br_netfilter(br_netfilter)
    assert topo.ping(topo.c1, "10.90.1.3")  # baseline without rules
    fw.apply(desired(a={"icc": False}))
    assert not topo.ping(topo.c1, "10.90.1.3")
    assert topo.ping(topo.c1, "10.90.1.1")  # the gateway is still reachable
    assert topo.ping(topo.c1, "10.90.100.2")  # and the outside
    fw.apply(desired())
    assert topo.ping(topo.c1, "10.90.1.3")  # icc back on


def test_internal_network(topo: Topology, fw: Driver) -> None:
    fw.apply(desired(b={"internal": True}))
    assert not topo.ping(topo.c3, "10.90.100.2")  # no way out
    assert not topo.ping(topo.outside, "10.90.2.2")  # no way in
    assert not topo.ping(topo.c1, "10.90.2.2")  # nor from another network
    assert topo.ping(topo.c3, "10.90.2.1")  # the gateway on the host itself (INPUT)
    assert topo.ping(topo.c1, "10.90.100.2")  # the other network is unaffected


def test_masquerade(topo: Topology, fw: Driver) -> None:
    topo.udp_echo_server()
    assert topo.source_seen_by_outside(topo.c1) == "10.90.1.2"  # no rules yet: routed, no NAT
    fw.apply(desired())
    assert topo.source_seen_by_outside(topo.c1) == "10.90.100.1"  # the host's address
    assert topo.source_seen_by_outside(topo.c3) == "10.90.100.1"
    fw.apply(desired(a={"masquerade": False}))
    assert topo.source_seen_by_outside(topo.c1) == "10.90.1.2"  # routed, return traffic accepted
    assert topo.source_seen_by_outside(topo.c3) == "10.90.100.1"


def test_unsolicited_inbound_dropped(topo: Topology, fw: Driver) -> None:
    assert topo.ping(topo.outside, "10.90.1.2")  # routed in without rules
    fw.apply(desired(a={"masquerade": False}))
    assert not topo.ping(topo.outside, "10.90.1.2")  # published ports come later
    assert topo.ping(topo.c1, "10.90.100.2")  # while the replies to c1's own traffic get in


# ------------------------------------------------------------------------------------------------ lifecycle


def test_apply_is_idempotent(topo: Topology, nft_fw: Driver) -> None:
    st = desired(a={"icc": False})
    nft_fw.apply(st)
    first = topo.nft("list", "ruleset")
    nft_fw.apply(st)
    assert topo.nft("list", "ruleset") == first
    assert first.count("table inet netd") == 1 and first.count("table bridge netd") == 1
    assert nft_fw.in_sync(st)


def test_in_sync_detects_drift(topo: Topology, nft_fw: Driver) -> None:
    st = desired(a={"icc": False})
    assert not nft_fw.in_sync(st)  # nothing applied yet
    nft_fw.apply(st)
    assert nft_fw.in_sync(st)
    assert not nft_fw.in_sync(desired())  # another desired state

    topo.nft("flush", "ruleset")
    assert not nft_fw.in_sync(st)
    nft_fw.apply(st)
    assert nft_fw.in_sync(st)

    topo.nft("flush", "chain", "inet", "netd", "to-aaaa00000000")
    assert not nft_fw.in_sync(st)
    nft_fw.apply(st)

    topo.nft("delete", "table", "bridge", "netd")
    assert not nft_fw.in_sync(st)
    nft_fw.apply(st)

    topo.nft("flush", "set", "inet", "netd", "bridges")
    assert not nft_fw.in_sync(st)
    nft_fw.apply(st)
    assert nft_fw.in_sync(st)
    assert not topo.ping(topo.c1, "10.90.2.2")  # re-applied rules work


def test_networks_removed_and_empty_state(topo: Topology, nft_fw: Driver) -> None:
    nft_fw.apply(desired(a={"icc": False}))
    nft_fw.apply(desired())  # icc back on: the bridge table goes away
    assert "table bridge netd" not in topo.nft("list", "tables")
    assert nft_fw.in_sync(desired())
    empty = DesiredState()
    nft_fw.apply(empty)
    assert "netd" not in topo.nft("list", "tables")
    assert nft_fw.in_sync(empty)
    assert topo.ping(topo.c1, "10.90.2.2")  # no rules: plain routing again


FOREIGN = """table inet foreign {
\tchain fchain {
\t\ttype filter hook forward priority filter + 10; policy accept;
\t\tip saddr 192.0.2.1 accept comment "mine"
\t}
}
"""


def test_foreign_tables_untouched(topo: Topology, nft_fw: Driver, tmp_path: Any) -> None:
    path = tmp_path / "foreign.nft"
    path.write_text(FOREIGN)
    sh("ip", "netns", "exec", topo.host, "nft", "-f", str(path))
    before = topo.nft("list", "table", "inet", "foreign")
    nft_fw.apply(desired(a={"icc": False}))
    assert topo.nft("list", "table", "inet", "foreign") == before
    nft_fw.remove_all()
    assert topo.nft("list", "table", "inet", "foreign") == before
    assert "netd" not in topo.nft("list", "tables")
    nft_fw.remove_all()  # nothing left to remove: not an error


def test_rules_survive_backend_close(topo: Topology, nft_fw: Driver) -> None:
    nft_fw.apply(desired())
    close = getattr(nft_fw.backend, "close", None)
    if close is not None:
        close()
    assert "table inet netd" in topo.nft("list", "tables")  # no owner flag
    assert not topo.ping(topo.c1, "10.90.2.2")


def test_dual_stack_and_many_kinds_load(topo: Topology, nft_fw: Driver) -> None:
    """The golden-file kind of state (IPv6 subnet, internal, icc off) is accepted by the kernel as rendered."""
    st = dual_stack_state()
    nft_fw.apply(st)
    assert nft_fw.in_sync(st)
    listing = topo.nft("list", "ruleset")
    assert "ip6 saddr fd00:91:2::/64 ip6 daddr fd00:91:2::/64 drop" in listing
    assert 'oifname != "br-0" ip6 saddr fd00:91::/64 masquerade' in listing
