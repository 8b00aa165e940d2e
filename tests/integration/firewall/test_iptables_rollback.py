"""iptables backend: one request is one step for both families (issue 11.9).

A request whose IPv6 half fails must not leave its IPv4 half in the kernel until the next firewall check: the
backend puts the previous netd chains of the family that succeeded back before it raises.  The IPv6 restore is
made to fail by pointing the backend at /bin/false for ip6tables-restore (a test hook on ``binary``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fwtopo import NetnsLoop, Topology
from test_firewall_backend import Driver, desired
from test_iptables_backend import netd_lines, save

import netd.firewall.iptables as iptables
from netd.core.errors import FirewallError
from netd.firewall.iptables import IptablesBackend

pytestmark = pytest.mark.integration

real_binary = iptables.binary


def failing_ip6_restore(flavour: iptables.Flavour, family: str, verb: str) -> str:
    if family == "ipv6" and verb == "restore":
        return "false"
    return real_binary(flavour, family, verb)  # type: ignore[arg-type]


@pytest.fixture(params=["nft", "legacy"])
def ipt(request: pytest.FixtureRequest, host_loop: NetnsLoop) -> Iterator[Driver]:
    yield Driver(host_loop, IptablesBackend(request.param))


def test_failed_ipv6_half_restores_the_ipv4_half(
    topo: Topology, ipt: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, after = desired(), desired(a={"icc": False}, b={"internal": True})
    ipt.apply(before)
    v4, v6 = netd_lines(save(topo, ipt)), netd_lines(save(topo, ipt, v6=True))
    assert v4 and v6
    monkeypatch.setattr(iptables, "binary", failing_ip6_restore)
    with pytest.raises(FirewallError, match="applying netd's ipv6 rules failed"):
        ipt.apply(after)
    assert netd_lines(save(topo, ipt)) == v4  # the previous IPv4 rules, not the new ones
    assert netd_lines(save(topo, ipt, v6=True)) == v6
    assert ipt.in_sync(before) and not ipt.in_sync(after)
    monkeypatch.setattr(iptables, "binary", real_binary)
    ipt.apply(after)  # the same change without the failure does change both families (the test can fail)
    assert netd_lines(save(topo, ipt)) != v4 and netd_lines(save(topo, ipt, v6=True)) != v6
    assert ipt.in_sync(after)


def test_failed_first_apply_leaves_no_ipv4_rules(
    topo: Topology, ipt: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(iptables, "binary", failing_ip6_restore)
    with pytest.raises(FirewallError):
        ipt.apply(desired(a={"icc": False}))
    assert netd_lines(save(topo, ipt)) == []
    assert netd_lines(save(topo, ipt, v6=True)) == []
