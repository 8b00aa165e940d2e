"""The local view of the cluster: one full list, then a watch from the list's revision; after any watch error
(etcd stopped, member lost, history compacted) the view is listed again and the watch restarts from the new
revision.  A resync reports exactly what differs from the last view, so keys written or deleted while this node
was cut off are seen like any other change.

The reconciler reads this cache, never etcd: while etcd is down the cache keeps its last view (``connected`` is
False) and the kernel keeps what was programmed from it.  ``on_change`` is called (in order, one at a time) with
each :class:`Change`, so the daemon can run a reconcile scoped to the networks and nodes that changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from netd.cluster.errors import ClusterUnavailableError
from netd.cluster.keys import KeyLayout, Kind, ParsedKey
from netd.cluster.records import (
    Allocation,
    EndpointRecord,
    NodeAlive,
    NodeRecord,
    OverlayNetwork,
    Record,
    ServiceRecord,
    decode_kind,
)
from netd.cluster.store import ClusterStore, WatchCompactedError, WatchEvent
from netd.cluster.txn import KV

log = structlog.get_logger("netd.cluster")

R = TypeVar("R", bound=Record)


@dataclass
class Change:
    """What changed in the view: keys put (with their new record) and keys deleted (with their last record)."""

    puts: dict[str, Record | None] = field(default_factory=dict)
    deletes: dict[str, Record | None] = field(default_factory=dict)
    resync: bool = False  # the result of a full list (after start or a reconnect)
    parsed: dict[str, ParsedKey] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes)

    def kinds(self) -> set[Kind]:
        return {p.kind for p in self.parsed.values()}

    def networks(self) -> set[str]:
        """Overlay network ids whose definition, endpoints or addresses changed (the scope of a reconcile)."""
        out = set()
        for p in self.parsed.values():
            if p.kind == "network":
                out.add(p.name)
            elif p.kind in ("endpoint", "address") and p.parent is not None:
                out.add(p.parent)
        return out

    def nodes(self) -> set[str]:
        return {p.name for p in self.parsed.values() if p.kind in ("node", "alive")}


OnChange = Callable[[Change], Awaitable[None] | None]


class ClusterCache:
    def __init__(
        self, store: ClusterStore, keys: KeyLayout, on_change: OnChange | None = None, *, retry: float = 0.5
    ) -> None:
        self.store, self.keys, self.on_change, self.retry = store, keys, on_change, retry
        self.records: dict[str, Record] = {}
        self.parsed: dict[str, ParsedKey] = {}
        self.revision = 0
        self.connected = False
        self.synced = False  # at least one full list arrived (before that, the view is empty, not "nothing")
        self.resyncs = 0
        self.last_error = ""
        self._task: asyncio.Task[None] | None = None
        self._updated = asyncio.Condition()

    # lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="netd-cluster-cache")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        delay = self.retry
        while True:
            try:
                kvs, revision = await self.store.get_prefix(self.keys.root())
                change = self._replace(kvs)
                self.revision, self.connected, self.synced = revision, True, True
                self.resyncs += 1
                delay = self.retry
                log.info(
                    "cluster_cache_synced", revision=revision, keys=len(self.records), changed=len(change.parsed)
                )
                await self._publish(change)
                async for event in self.store.watch(self.keys.root(), revision + 1):
                    await self._publish(self._apply(event))
                raise ClusterUnavailableError("cluster store unreachable: the watch ended")
            except (ClusterUnavailableError, WatchCompactedError) as e:
                self.last_error = str(e)
                if self.connected:
                    log.warning("cluster_cache_disconnected", error=self.last_error, revision=self.revision)
                self.connected = False
                await self._publish(Change())  # wake waiters: the state changed
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # updating the view
    def _decode(self, key: str, value: bytes) -> tuple[ParsedKey, Record | None] | None:
        parsed = self.keys.parse(key)
        if parsed is None:
            return None
        try:
            return parsed, decode_kind(parsed.kind, value)
        except ValueError as e:
            log.warning("cluster_bad_value", key=key, error=str(e))
            return None

    def _replace(self, kvs: list[KV]) -> Change:
        change = Change(resync=True)
        fresh: dict[str, Record] = {}
        parsed: dict[str, ParsedKey] = {}
        for kv in kvs:
            got = self._decode(kv.key, kv.value)
            if got is None or got[1] is None:
                continue
            parsed[kv.key], fresh[kv.key] = got[0], got[1]
        for key, rec in fresh.items():
            if self.records.get(key) != rec:
                change.puts[key] = rec
                change.parsed[key] = parsed[key]
        for key, rec in self.records.items():
            if key not in fresh:
                change.deletes[key] = rec
                change.parsed[key] = self.parsed[key]
        self.records, self.parsed = fresh, parsed
        return change

    def _apply(self, event: WatchEvent) -> Change:
        change = Change()
        self.revision = max(self.revision, event.revision)
        if event.kind == "delete":
            old = self.records.pop(event.key, None)
            parsed = self.parsed.pop(event.key, None)
            if old is not None and parsed is not None:
                change.deletes[event.key], change.parsed[event.key] = old, parsed
            return change
        got = self._decode(event.key, event.value)
        if got is None or got[1] is None:
            return change
        self.records[event.key], self.parsed[event.key] = got[1], got[0]
        change.puts[event.key], change.parsed[event.key] = got[1], got[0]
        return change

    async def _publish(self, change: Change) -> None:
        if change and self.on_change is not None:
            try:
                result = self.on_change(change)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("cluster_change_handler_failed")
        async with self._updated:
            self._updated.notify_all()

    async def wait_for(self, predicate: Callable[[ClusterCache], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds after some update; False after ``timeout`` seconds."""

        async def waiting() -> None:
            async with self._updated:
                await self._updated.wait_for(lambda: predicate(self))

        try:
            await asyncio.wait_for(waiting(), timeout)
            return True
        except TimeoutError:
            return predicate(self)

    # reading the view
    def _of(self, kind: Kind, cls: type[R]) -> dict[ParsedKey, R]:
        out: dict[ParsedKey, R] = {}
        for key, p in self.parsed.items():
            rec = self.records[key]
            if p.kind == kind and isinstance(rec, cls):
                out[p] = rec
        return out

    def nodes(self) -> dict[str, NodeRecord]:
        return {p.name: rec for p, rec in self._of("node", NodeRecord).items()}

    def alive(self) -> dict[str, NodeAlive]:
        return {p.name: rec for p, rec in self._of("alive", NodeAlive).items()}

    def networks(self) -> dict[str, OverlayNetwork]:
        return {p.name: rec for p, rec in self._of("network", OverlayNetwork).items()}

    def endpoints(self, network_id: str | None = None) -> list[EndpointRecord]:
        return [
            rec
            for p, rec in self._of("endpoint", EndpointRecord).items()
            if network_id is None or p.parent == network_id
        ]

    def services(self) -> dict[str, ServiceRecord]:
        """By name."""
        return {rec.name: rec for rec in self._of("service", ServiceRecord).values()}

    def tasks(self, service: str) -> list[EndpointRecord]:
        """The endpoint records of ``service``'s tasks, on every node (alive or not: the caller decides)."""
        return [rec for rec in self._of("endpoint", EndpointRecord).values() if rec.service == service]

    def allocations(self, network_id: str) -> list[Allocation]:
        return [rec for p, rec in self._of("address", Allocation).items() if p.parent == network_id]
