"""This node's endpoints in etcd, made equal to its desired state (the state file is the truth for its own
endpoints): records missing or different are put, records and address allocations of endpoints this node no
longer has are removed, and a local endpoint whose allocation is missing (etcd lost its data, ``node rm`` while
the node was cut off) takes it again, keeping its address.

Runs at start (after a reboot the endpoints replayed from the state file are "re-registered"), after the node
registered again, after the watch resynced (etcd back), after local changes that remove endpoints without an
API call (netns rm, a foreign namespace gone) and on a slow timer.  etcd is read first, without the service
lock (an etcd that does not answer must not hold up local work); the comparison and the writes are done under
it, so no connect is half-way (an allocation without its endpoint yet) while they decide: a connect that was
half-way during the read has finished (its endpoint is in the state) or failed (it released its address) by
the time the lock is held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from netd.cluster.ingress import is_sbox
from netd.cluster.keys import KeyLayout
from netd.cluster.node import ClusterNode
from netd.cluster.records import Allocation, EndpointRecord, decode, encode, now
from netd.cluster.txn import KV
from netd.core.model import DesiredState

from .mirror import endpoint_record, local_overlay_endpoints, same_record

log = structlog.get_logger("netd.multihost")


async def publish(
    cluster: ClusterNode, get_state: Callable[[], DesiredState], lock: asyncio.Lock
) -> dict[str, int]:
    """Raises ClusterUnavailableError when etcd cannot be reached (the caller tries again later)."""
    keys: KeyLayout = cluster.keys
    eps, _ = await cluster.store.get_prefix(keys.section("endpoints"))
    allocs, _ = await cluster.store.get_prefix(keys.section("addresses"))
    async with lock:
        return await _publish(cluster, get_state(), eps, allocs)


async def _publish(cluster: ClusterNode, state: DesiredState, eps: list[KV], allocs: list[KV]) -> dict[str, int]:
    node = cluster.cfg.node_name
    keys: KeyLayout = cluster.keys
    store = cluster.store
    local = local_overlay_endpoints(state)
    have: dict[str, tuple[str, EndpointRecord]] = {}
    for kv in eps:
        try:
            rec = decode(EndpointRecord, kv.value)
        except ValueError:
            continue
        if rec.node == node and not is_sbox(rec.id):  # the node's ingress address is the mesh's (mesh.py)
            have[rec.id] = (kv.key, rec)
    put = deleted = released = taken = 0
    for ep in local.values():
        want = endpoint_record(ep, node)
        got = have.get(ep.id)
        if got is None or not same_record(got[1], want):
            await store.put(keys.endpoint(ep.network, ep.id), encode(want))
            put += 1
    for ep_id, (key, _rec) in have.items():
        if ep_id not in local:
            await store.delete(key)
            deleted += 1
    held: dict[str, Allocation] = {}
    for kv in allocs:
        try:
            alloc = decode(Allocation, kv.value)
        except ValueError:
            continue
        held[kv.key] = alloc
        if alloc.node == node and alloc.endpoint not in local and not is_sbox(alloc.endpoint):
            await cluster.ipam.release_address(alloc.network, alloc.address, alloc.endpoint)
            released += 1
    for ep in local.values():
        for iface in (ep.ipv4, ep.ipv6):
            if iface is None:
                continue
            key = keys.address(ep.network, iface.ip)
            if key in held:
                if held[key].endpoint != ep.id:
                    log.error(
                        "overlay_address_clash",
                        address=str(iface.ip),
                        endpoint=ep.id[:12],
                        holder=held[key].endpoint[:12],
                        node=held[key].node,
                        hint="two endpoints hold one address; disconnect one of them",
                    )
                continue
            value = Allocation(network=ep.network, address=iface.ip, endpoint=ep.id, node=node, created=now())
            await store.create(key, encode(value))
            taken += 1
    counts = {"put": put, "deleted": deleted, "released": released, "taken": taken}
    if any(counts.values()):
        log.info("overlay_endpoints_published", **counts)
    return counts
