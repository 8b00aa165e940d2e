"""The apply logic of the LB backends (delta vs full, repair, conntrack flush of removed backends), with the
kernel side replaced by a recorder (pure; the real kernel is in tests/integration/firewall/test_lb.py)."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address

import pytest

from netd.core.errors import FirewallError
from netd.firewall import lb
from netd.firewall.lb_conntrack import BackendTarget
from netd.firewall.lb_model import Backend, LbNode, LbRuleset, PortSpec, Service, Slots, build_lb


class Recorder(lb._Worker):
    name = "recorder"

    def __init__(self) -> None:
        super().__init__(None)
        self.kernel_token: str | None = None
        self.calls: list[str] = []
        self.fail_delta = False

    def _delta(self, old: LbRuleset, old_slots: Slots, new: LbRuleset, new_slots: Slots, token: str) -> int:
        self.calls.append("delta")
        if self.fail_delta:
            raise FirewallError("no such chain")
        self.kernel_token = token
        return 1

    def _full(self, desired: LbRuleset, slots: Slots, token: str) -> int:
        self.calls.append("full")
        self.kernel_token = None if desired.empty else token
        return 2

    def _kernel_token(self) -> str | None:
        return self.kernel_token

    def _remove_sync(self) -> None:
        self.kernel_token = None


def rules(n: int) -> LbRuleset:
    backends = tuple(Backend(f"t{i}", IPv4Address(f"10.0.9.{10 + i}"), "front", "n1") for i in range(n))
    svc = Service("web", (("front", IPv4Address("10.0.9.2")),), (PortSpec("udp", None, 53),), backends=backends)
    return build_lb([svc], LbNode("n1"))


@pytest.fixture
def flushed(monkeypatch: pytest.MonkeyPatch) -> list[BackendTarget]:
    seen: list[BackendTarget] = []

    async def fake_flush(targets: list[BackendTarget]) -> int:
        seen.extend(targets)
        return len(targets)

    monkeypatch.setattr(lb, "flush_backends", fake_flush)
    return seen


def test_first_full_then_delta_then_nothing(flushed: list[BackendTarget]) -> None:
    r = Recorder()
    try:
        assert asyncio.run(r.apply(rules(3))).mode == "full"
        assert asyncio.run(r.apply(rules(4))).mode == "delta"
        assert asyncio.run(r.apply(rules(4))).mode == "none"
        assert asyncio.run(r.in_sync(rules(4))) and not asyncio.run(r.in_sync(rules(3)))
        change = asyncio.run(r.apply(rules(2)))
        assert change.mode == "delta" and change.flushed == 2
        assert {str(t.address) for t in flushed} == {"10.0.9.12", "10.0.9.13"}
    finally:
        r.close()


def test_lost_kernel_state_means_a_full_apply(flushed: list[BackendTarget]) -> None:
    r = Recorder()
    try:
        asyncio.run(r.apply(rules(3)))
        r.kernel_token = None  # `nft flush ruleset` by someone else
        assert not asyncio.run(r.in_sync(rules(3)))
        assert asyncio.run(r.apply(rules(3))).mode == "full"
        assert asyncio.run(r.in_sync(rules(3)))
    finally:
        r.close()


def test_a_failed_delta_falls_back_to_full(flushed: list[BackendTarget]) -> None:
    r = Recorder()
    try:
        asyncio.run(r.apply(rules(3)))
        r.fail_delta = True
        assert asyncio.run(r.apply(rules(4))).mode == "full"
        assert r.calls == ["full", "delta", "full"]
    finally:
        r.close()


def test_a_failed_full_leaves_nothing_believed_applied(flushed: list[BackendTarget]) -> None:
    r = Recorder()

    def boom(desired: LbRuleset, slots: Slots, token: str) -> int:
        raise FirewallError("kernel said no")

    try:
        r._full = boom  # type: ignore[method-assign]
        with pytest.raises(FirewallError):
            asyncio.run(r.apply(rules(3)))
        assert not asyncio.run(r.in_sync(rules(3)))
    finally:
        r.close()


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(FirewallError, match="use nftables or iptables"):
        lb.make_lb_backend("ipvs")
