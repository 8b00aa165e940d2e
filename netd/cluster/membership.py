"""This node in the cluster: registered under a lease, kept alive, re-registered when the lease was lost.

Two keys per node (see ``keys``): ``/alive/<name>`` is attached to the node's lease, so etcd itself deletes it
``lease_ttl`` seconds after the node stopped refreshing (crash, power loss, partition); every other node sees the
delete in its watch and removes its forwarding entries for that node.  ``/nodes/<name>`` is persistent: it keeps
the node's address, version, local subnets and last-seen time for ``node ls`` while the node is down, and
``node rm`` removes it together with the node's address allocations and endpoints.

aetcd does not refresh leases by itself: :meth:`Membership.run` does, every third of the TTL.  A refresh that
answers TTL 0 means the lease is gone (etcd restarted without its data, or the node was cut off longer than the
TTL): the node registers again under a new lease and calls ``on_register`` so the daemon can publish its own
endpoints again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from netd.cluster.errors import ClusterUnavailableError, LeaseLostError
from netd.cluster.keys import KeyLayout
from netd.cluster.records import Allocation, EndpointRecord, NodeAlive, NodeRecord, decode, encode, now
from netd.cluster.store import ClusterStore
from netd.cluster.txn import Delete, Put, absent, mod_is
from netd.core.errors import ConflictError, NotFoundError
from netd.core.model import IPAddress, IPNetwork

log = structlog.get_logger("netd.cluster")

LAST_SEEN_EVERY = 60.0  # seconds between refreshes of /nodes/<name>.last_seen
TXN_OPS = 100  # etcd refuses transactions with more than 128 operations (--max-txn-ops)


@dataclass
class NodeStatus:
    name: str
    advertise_address: str
    alive: bool
    last_seen: str
    started: str
    registered: str
    version: str
    vxlan_port: int
    local_subnets: list[str] = field(default_factory=list)
    endpoints: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "Address": self.advertise_address,
            "State": "alive" if self.alive else "down",
            "LastSeen": self.last_seen,
            "Started": self.started,
            "Registered": self.registered,
            "Version": self.version,
            "VxlanPort": self.vxlan_port,
            "LocalSubnets": self.local_subnets,
            "Endpoints": self.endpoints,
        }


class Membership:
    def __init__(
        self,
        store: ClusterStore,
        keys: KeyLayout,
        *,
        name: str,
        advertise_address: IPAddress,
        version: str,
        vxlan_port: int = 4789,
        ttl: int = 10,
        local_subnets: Iterable[IPNetwork] = (),
        on_register: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store, self.keys = store, keys
        self.name, self.address, self.version, self.vxlan_port, self.ttl = (
            name,
            advertise_address,
            version,
            vxlan_port,
            ttl,
        )
        self.local_subnets = list(local_subnets)
        self.on_register = on_register
        self.lease_id = 0  # 0: no lease held (not registered yet, or lost)
        self.registrations = 0
        self.started = now()
        self._registered_at = ""
        self._last_seen_at = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """This node holds a lease that etcd confirmed at the last refresh."""
        return self.lease_id != 0 and self.store.connected

    def _record(self) -> NodeRecord:
        return NodeRecord(
            name=self.name,
            advertise_address=self.address,
            vxlan_port=self.vxlan_port,
            version=self.version,
            started=self.started,
            registered=self._registered_at or now(),
            last_seen=now(),
            local_subnets=self.local_subnets,
        )

    async def register(self) -> None:
        """Take ``/alive/<name>`` under a new lease and write ``/nodes/<name>``.

        Refused when another live node holds the name (a different address); the same node restarting within
        the TTL takes its old key over (the old lease then expires with nothing attached)."""
        current = await self.store.get(self.keys.alive(self.name))
        if current is not None:
            holder = decode(NodeAlive, current.value)
            if holder.advertise_address != self.address and holder.lease != self.lease_id:
                raise ConflictError(
                    f"node name {self.name!r} is held by a live node at {holder.advertise_address}; give this "
                    "node another [cluster] node_name, or stop netd there and wait lease_ttl seconds",
                    field="node_name",
                )
        prior = await self.store.get(self.keys.node(self.name))
        if prior is not None and not self._registered_at:
            with contextlib.suppress(ValueError):
                self._registered_at = decode(NodeRecord, prior.value).registered
        lease = await self.store.grant_lease(self.ttl)
        alive = NodeAlive(name=self.name, lease=lease, advertise_address=self.address, since=now())
        # compare on the alive key as read: of two racing registrations of one name, one fails
        key = self.keys.alive(self.name)
        compares = [absent(key)] if current is None else [mod_is(key, current.mod_revision)]
        record = self._record()
        result = await self.store.txn(
            f"register node {self.name}",
            compares,
            [Put(key, encode(alive), lease), Put(self.keys.node(self.name), encode(record))],
        )
        if not result.succeeded:
            await self.store.revoke_lease(lease)
            raise ConflictError(
                f"node name {self.name!r} was registered by another node at the same moment; give each node its "
                "own [cluster] node_name",
                field="node_name",
            )
        first = self.registrations == 0
        self.lease_id, self.registrations = lease, self.registrations + 1
        self._registered_at = record.registered
        self._last_seen_at = asyncio.get_running_loop().time()
        log.info("node_registered", node=self.name, lease=hex(lease), address=str(self.address), again=not first)
        if not first and self.on_register is not None:
            await self.on_register()

    async def start(self) -> None:
        """Register (raises ClusterUnavailableError when etcd is down at start) and keep the lease alive."""
        await self.register()
        self._task = asyncio.create_task(self.run(), name="netd-cluster-keepalive")

    async def run(self) -> None:
        interval = max(self.ttl / 3, 0.5)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                if self.lease_id == 0:
                    await self.register()
                    continue
                remaining = await self.store.refresh_lease(self.lease_id)
                if remaining <= 0:
                    log.warning("node_lease_lost", node=self.name, lease=hex(self.lease_id))
                    self.lease_id = 0
                    await self.register()
                elif loop.time() - self._last_seen_at >= LAST_SEEN_EVERY:
                    await self.store.put(self.keys.node(self.name), encode(self._record()))
                    self._last_seen_at = loop.time()
            except LeaseLostError:
                self.lease_id = 0
            except ClusterUnavailableError as e:
                log.warning("node_keepalive_failed", node=self.name, error=e.message)
            except ConflictError as e:
                log.error("node_register_refused", node=self.name, error=e.message)

    async def set_local_subnets(self, subnets: Iterable[IPNetwork]) -> None:
        self.local_subnets = list(subnets)
        await self.store.put(self.keys.node(self.name), encode(self._record()))

    async def stop(self, *, leave: bool = True) -> None:
        """Stop refreshing.  ``leave``: record the last-seen time and revoke the lease, so the other nodes drop
        this node's entries now rather than after the TTL (a daemon restart passes ``leave=False``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if leave and self.lease_id:
            try:
                await self.store.put(self.keys.node(self.name), encode(self._record()))
                await self.store.revoke_lease(self.lease_id)
            except ClusterUnavailableError as e:
                log.warning("node_leave_failed", node=self.name, error=e.message)
            self.lease_id = 0

    # the whole cluster
    async def list_nodes(self) -> list[NodeStatus]:
        nodes, _ = await self.store.get_prefix(self.keys.section("nodes"))
        alive, _ = await self.store.get_prefix(self.keys.section("alive"))
        endpoints, _ = await self.store.get_prefix(self.keys.section("endpoints"))
        live = {kv.key.rsplit("/", 1)[1] for kv in alive}
        count: dict[str, int] = {}
        for kv in endpoints:
            with contextlib.suppress(ValueError):
                node = decode(EndpointRecord, kv.value).node
                count[node] = count.get(node, 0) + 1
        out = []
        for kv in nodes:
            try:
                rec = decode(NodeRecord, kv.value)
            except ValueError as e:
                log.warning("cluster_bad_value", key=kv.key, error=str(e))
                continue
            out.append(
                NodeStatus(
                    name=rec.name,
                    advertise_address=str(rec.advertise_address),
                    alive=rec.name in live,
                    last_seen=now() if rec.name in live else rec.last_seen,
                    started=rec.started,
                    registered=rec.registered,
                    version=rec.version,
                    vxlan_port=rec.vxlan_port,
                    local_subnets=[str(s) for s in rec.local_subnets],
                    endpoints=count.get(rec.name, 0),
                )
            )
        return out

    async def remove_node(self, name: str) -> dict[str, int]:
        """``node rm``: forget a node that is gone for good — its endpoints, its address allocations and its
        record.  Refused while the node is alive.  Returns what was removed."""
        if await self.store.get(self.keys.alive(name)) is not None:
            raise ConflictError(
                f"node {name!r} is alive (it holds its lease); stop netd on it first, or wait until its lease "
                "expires, then run node rm again",
                field="node",
            )
        record = await self.store.get(self.keys.node(name))
        endpoints, _ = await self.store.get_prefix(self.keys.section("endpoints"))
        addresses, _ = await self.store.get_prefix(self.keys.section("addresses"))
        doomed_eps = [kv.key for kv in endpoints if _node_of(EndpointRecord, kv.value) == name]
        doomed_addrs = [kv.key for kv in addresses if _node_of(Allocation, kv.value) == name]
        if record is None and not doomed_eps and not doomed_addrs:
            raise NotFoundError(f"node {name!r} is not known to the cluster (see node ls)", field="node")
        doomed = [*doomed_eps, *doomed_addrs, *([record.key] if record is not None else [])]
        guard = [absent(self.keys.alive(name))]  # the node must not come back half-way
        for i in range(0, len(doomed), TXN_OPS):
            result = await self.store.txn(
                f"remove node {name}", guard, [Delete(k) for k in doomed[i : i + TXN_OPS]]
            )
            if not result.succeeded:
                raise ConflictError(
                    f"node {name!r} came back while it was being removed; nothing more removed", field="node"
                )
        log.info("node_removed", node=name, endpoints=len(doomed_eps), addresses=len(doomed_addrs))
        return {"endpoints": len(doomed_eps), "addresses": len(doomed_addrs)}


def _node_of(cls: type[EndpointRecord] | type[Allocation], value: bytes) -> str | None:
    try:
        return decode(cls, value).node
    except ValueError:
        return None
