"""The service's commit: a failed apply restores the previous desired state and reconciles it again."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

import pytest

from netd.core.actions import Scope
from netd.core.config import Settings
from netd.core.errors import KernelError
from netd.core.linkspec import NsProbe, ObservedHost
from netd.core.model import IPNetwork
from netd.engine.service import Service
from netd.engine.state import StateStore


class FakeApplier:
    def __init__(self, fail_first: bool) -> None:
        self.fail_first = fail_first
        self.calls: list[tuple[Scope, str]] = []

    async def apply(self, scope: Scope, reason: str) -> dict[str, str]:
        self.calls.append((scope, reason))
        if self.fail_first and len(self.calls) == 1:
            return {next(iter(scope.networks or {"x"})): "bridge br-x: create failed: Operation not permitted (1)"}
        return {}

    async def host_prefixes(self) -> list[IPNetwork]:
        return []

    async def observe(self, names: Collection[str] | None = None) -> ObservedHost:
        return ObservedHost()

    def ns_probe(self, path: str) -> NsProbe:
        return NsProbe(None, "does not exist")

    async def ns_has_link(self, path: str, ifname: str) -> bool:
        return False

    def netns_foreign(self, name: str) -> str | None:
        return None

    def netns_path(self, name: str) -> str:
        return f"/run/netns/{name}"


def _service(tmp_path: Path, applier: FakeApplier) -> Service:
    store = StateStore(tmp_path / "state.json")
    return Service(Settings(state_dir=tmp_path), store, store.load(), applier, kernel=applier)


def test_failed_apply_is_rolled_back(tmp_path: Path) -> None:
    applier = FakeApplier(fail_first=True)
    svc = _service(tmp_path, applier)
    before = svc.state
    with pytest.raises(KernelError, match="rolled back: bridge br-x"):
        asyncio.run(svc.create_network({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}]}}))
    assert svc.state == before
    assert svc.store.load() == before  # the file too
    assert [reason for _, reason in applier.calls] == ["network create x", "rollback network create x"]
    # the rollback reconciles the same scope, with the new bridge's name in it so the half-built one is deleted
    assert applier.calls[1][0].networks == applier.calls[0][0].networks
    assert any(name.startswith("br-") for name in applier.calls[1][0].links)


def test_successful_apply_persists(tmp_path: Path) -> None:
    svc = _service(tmp_path, FakeApplier(fail_first=False))
    net = asyncio.run(svc.create_network({"Name": "x"}))
    assert svc.store.load().networks["x"].id == net.id
    assert str(net.ipam[0].subnet) == "172.17.0.0/16"  # Docker's first pool (172.16/16 is left alone)


class FailOnce(FakeApplier):
    """Fails the apply whose reason starts with ``prefix``, once."""

    def __init__(self, prefix: str) -> None:
        super().__init__(fail_first=False)
        self.prefix = prefix

    async def apply(self, scope: Scope, reason: str) -> dict[str, str]:
        self.calls.append((scope, reason))
        if reason.startswith(self.prefix):
            self.prefix = "\0"
            return {next(iter(scope.endpoints or {"x"})): "veth: create failed: File exists (17)"}
        return {}


def test_addresses_are_the_first_free_ones_after_disconnects_and_rollbacks(tmp_path: Path) -> None:
    """Allocation scans from a remembered hint (O(1) per connect); a freed or rolled-back address is handed out
    again before higher ones, as with a scan from the pool's start."""
    applier = FailOnce("\0")
    svc = _service(tmp_path, applier)

    async def body() -> list[str]:
        await svc.create_network({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}]}})
        ips = []
        for name in ("c1", "c2", "c3"):
            await svc.create_netns({"Name": name})
            ep = await svc.connect("x", {"Netns": name})
            ips.append(str(ep.ipv4))
        await svc.disconnect("x", {"Netns": "c2"})
        await svc.create_netns({"Name": "c4"})
        applier.prefix = "connect"
        with pytest.raises(KernelError, match="rolled back"):
            await svc.connect("x", {"Netns": "c4"})  # would have taken .3; rolled back, .3 is free again
        ips.append(str((await svc.connect("x", {"Netns": "c4"})).ipv4))
        await svc.create_netns({"Name": "c5"})
        ips.append(str((await svc.connect("x", {"Netns": "c5"})).ipv4))
        return ips

    assert asyncio.run(body()) == ["10.1.0.2/24", "10.1.0.3/24", "10.1.0.4/24", "10.1.0.3/24", "10.1.0.5/24"]


class FailConnect(FakeApplier):
    def __init__(self) -> None:
        super().__init__(fail_first=False)

    async def apply(self, scope: Scope, reason: str) -> dict[str, str]:
        self.calls.append((scope, reason))
        if reason.startswith("connect") and "fail" in reason:
            return {next(iter(scope.endpoints or {"x"})): "veth: create failed"}
        return {}


def test_files_written_beside_the_apply_follow_the_outcome(tmp_path: Path) -> None:
    """``before_apply`` runs beside the kernel apply of a change naming its namespaces (the daemon writes their
    resolv.conf there); on success ``on_change`` follows with the same state, on a rollback with the old one."""
    svc = _service(tmp_path, FailConnect())
    seen: list[tuple[str, frozenset[str] | None, int]] = []

    async def early(state: object, netns: frozenset[str]) -> None:
        seen.append(("before_apply", netns, len(svc.state.endpoints)))
        await asyncio.sleep(0)

    async def after(state: object, netns: frozenset[str] | None) -> None:
        seen.append(("on_change", netns, len(svc.state.endpoints)))

    svc.before_apply, svc.on_change = early, after

    async def run() -> None:
        await svc.create_network({"Name": "x"})
        await svc.create_netns({"Name": "ok"})
        await svc.create_netns({"Name": "fail"})
        seen.clear()
        await svc.connect("x", {"Netns": "ok"})
        assert seen == [("before_apply", frozenset({"ok"}), 1), ("on_change", frozenset({"ok"}), 1)]
        seen.clear()
        with pytest.raises(KernelError, match="rolled back"):
            await svc.connect("x", {"Netns": "fail"})
        # the new state's files first, then (rolled back: one endpoint again) the old state's
        assert seen == [("before_apply", frozenset({"fail"}), 2), ("on_change", frozenset({"fail"}), 1)]

    asyncio.run(run())
