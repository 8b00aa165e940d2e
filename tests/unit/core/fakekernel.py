"""A kernel and a firewall that keep nothing and need no root: enough for the reconciler's locking and
progress logic (the real kernel is tested in tests/integration)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Collection, Mapping
from typing import Any

from netd.core.linkspec import NsProbe, ObservedHost
from netd.core.model import IPNetwork
from netd.firewall.rules import Ruleset


class FakeKernel:
    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None  # host_prefixes waits for it when set (a slow kernel read)
        self.alive_inodes: dict[str, int] = {}  # netns path -> inode; anything else is gone
        self.forgotten: list[str] = []
        self.sysctls: dict[str, str] = {}

    async def host_prefixes(self) -> list[IPNetwork]:
        if self.gate is not None:
            await self.gate.wait()
        return []

    async def observe(self, names: Collection[str] | None = None) -> ObservedHost:
        await asyncio.sleep(0)
        return ObservedHost()

    async def observe_children(self, paths: Collection[str]) -> dict[str, Any]:
        return {}

    async def observe_peers(self, peers: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
        return {}  # the namespace side: in sync (the integration tests drift it for real)

    def ns_probe(self, path: str) -> NsProbe:
        ino = self.alive_inodes.get(path)
        return NsProbe((1, ino)) if ino is not None else NsProbe(None, "does not exist")

    def ns_identity(self, path: str) -> int | None:
        return self.alive_inodes.get(path)

    def ns_alive(self, path: str) -> bool:
        return path in self.alive_inodes

    def forget_netns(self, path: str) -> None:
        self.forgotten.append(path)

    def release_netns_sockets(self) -> None:
        self.released = getattr(self, "released", 0) + 1

    def netns_path(self, name: str) -> str:
        return f"/run/netns/{name}"

    def owned_netns(self, names: Collection[str] | None = None) -> set[str]:
        return set()

    def mark_netns(self, name: str, owned: bool) -> None:
        pass

    async def get_sysctl(self, key: str, ns: object = None) -> str:
        return self.sysctls.get(key, "0")

    async def set_sysctl(self, key: str, value: str, ns: object = None) -> None:
        self.sysctls[key] = value

    async def ensure_bridge(self, spec: object) -> None:
        await asyncio.sleep(0)

    async def ensure_veth(self, spec: object, *, seen_missing: bool = False, announce: bool = True) -> None:
        await asyncio.sleep(0)

    async def delete_links(self, ifnames: object) -> None:
        await asyncio.sleep(0)

    async def ensure_netns(self, name: str) -> bool:
        return True

    async def remove_netns(self, name: str) -> None:
        return None

    async def events(self) -> AsyncGenerator[str, None]:
        await asyncio.Event().wait()
        yield "never"


class FakeFirewall:
    name = "fake"

    def __init__(self) -> None:
        self.applied: list[Ruleset] = []

    async def apply(self, ruleset: Ruleset) -> None:
        self.applied.append(ruleset)

    async def in_sync(self, ruleset: Ruleset) -> bool:
        return bool(self.applied) and self.applied[-1] == ruleset

    async def remove_all(self) -> None:
        self.applied.clear()

    def describe(self) -> dict[str, str]:
        return {}
