"""An encrypted network's keys in etcd and the rotation protocol over them (issue 17).

``/keys/<network id>`` (:class:`NetworkKeys`) holds the master keys by generation, the generation sent with
(``tx``), the last step published (``stage``) and a step counter (``seq``).  Every node with endpoints on the
network applies what it holds to its kernel and then writes ``/key-acks/<network id>/<node>`` (:class:`KeyAck`,
under its lease, so a node that dies stops holding anything up) with that ``seq`` and its boot epoch.

A rotation is the plan of ``netd.drivers.overlay_crypto.plan_rotation``, one step at a time:

``created``/``prune`` --(all acked, timer due or ``rotate-key``)--> ``accept``  (keys {g, g+1}, tx g)
``accept`` --(all acked)--> ``switch``  (keys {g, g+1}, tx g+1)
``switch`` --(all acked)--> ``prune``  (keys {g+1}, tx g+1)

Any node may publish the next step; each publish is a compare-and-swap on the record's mod revision, so two
nodes racing publish it once.  "All" are the alive nodes with endpoints on the network (the participants).

Keys are made with :mod:`secrets` (``ipsecspec.new_master_key``) and never logged.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping
from datetime import UTC, datetime

import structlog

from netd.cluster.keys import KeyLayout
from netd.cluster.records import EndpointRecord, KeyAck, KeyGeneration, NetworkKeys, NodeAlive, decode, encode, now
from netd.cluster.store import ClusterStore
from netd.core.ipsecspec import KeyRing, new_master_key

log = structlog.get_logger("netd.cluster")

ACCEPT, SWITCH, PRUNE = "accept", "switch", "prune"  # overlay_crypto.Stage's values (cluster imports only core)
IDLE = ("created", PRUNE)


def ring_of(rec: NetworkKeys) -> KeyRing:
    keys = tuple(sorted((k.gen, base64.b64decode(k.key)) for k in rec.keys))
    return KeyRing(rec.vni, keys, rec.tx)


def _from_ring(rec: NetworkKeys, ring: KeyRing, stage: str, rotated: str | None = None) -> NetworkKeys:
    gens = [KeyGeneration(gen=g, key=base64.b64encode(k).decode()) for g, k in ring.keys]
    return NetworkKeys(
        network=rec.network,
        vni=rec.vni,
        keys=gens,
        tx=ring.tx,
        seq=rec.seq + 1,
        stage=stage,
        rotated=rec.rotated if rotated is None else rotated,
    )


def first_keys(network: str, vni: int) -> NetworkKeys:
    key = base64.b64encode(new_master_key()).decode()
    return NetworkKeys(network=network, vni=vni, keys=[KeyGeneration(gen=1, key=key)], tx=1, rotated=now())


def participants(network: str, endpoints: Collection[EndpointRecord], alive: Mapping[str, NodeAlive]) -> set[str]:
    """The nodes a step waits for: alive, with at least one endpoint on the network."""
    return {e.node for e in endpoints if e.network == network and e.node in alive}


def acked(rec: NetworkKeys, acks: Mapping[str, KeyAck], nodes: Collection[str]) -> bool:
    return all(n in acks and acks[n].seq >= rec.seq for n in nodes)


def waiting_for(rec: NetworkKeys, acks: Mapping[str, KeyAck], nodes: Collection[str]) -> list[str]:
    return sorted(n for n in nodes if n not in acks or acks[n].seq < rec.seq)


def rotating(rec: NetworkKeys) -> bool:
    return rec.stage not in IDLE


def due(rec: NetworkKeys, interval: float, at: datetime | None = None) -> bool:
    if interval <= 0 or not rec.rotated:
        return False
    born = datetime.fromisoformat(rec.rotated)
    return ((at or datetime.now(UTC)) - born).total_seconds() >= interval


def next_record(rec: NetworkKeys, start: bool, new_key: bytes | None = None) -> NetworkKeys | None:
    """The record after the next step; None when there is none (idle and not ``start``-ed).  The caller checks
    the barrier (:func:`acked`) first."""
    ring = ring_of(rec)
    if rec.stage in IDLE:
        if not start:
            return None
        if len(ring.keys) != 1:
            raise ValueError(f"keys of network {rec.network}: idle with generations {ring.generations}")
        new = ring.tx + 1
        accept = KeyRing(ring.vni, (*ring.keys, (new, new_key or new_master_key())), ring.tx)
        return _from_ring(rec, accept, ACCEPT, rotated=now())
    new = max(ring.generations)
    if rec.stage == ACCEPT:
        return _from_ring(rec, KeyRing(ring.vni, ring.keys, new), SWITCH)
    if rec.stage == SWITCH:
        return _from_ring(rec, KeyRing(ring.vni, ((new, ring.key(new)),), new), PRUNE)
    raise ValueError(f"keys of network {rec.network}: unknown stage {rec.stage!r}")


class ClusterKeys:
    """The etcd side: create a network's keys once, publish a step (compare-and-swap), ack a step."""

    def __init__(self, store: ClusterStore, keys: KeyLayout) -> None:
        self.store, self.keys = store, keys

    async def ensure(self, network: str, vni: int) -> None:
        """Create the network's keys unless some node did (create-if-absent: one wins, the others read it)."""
        result = await self.store.create(self.keys.network_key(network), encode(first_keys(network, vni)))
        if result.succeeded:
            log.info("network_keys_created", network=network, vni=vni)

    async def advance(self, network: str, start: bool, nodes: Collection[str], acks: Mapping[str, KeyAck]) -> bool:
        """Publish the next step if every participant acked the current one; True if this call published it."""
        kv = await self.store.get(self.keys.network_key(network))
        if kv is None:
            return False
        rec = decode(NetworkKeys, kv.value)
        if not acked(rec, acks, nodes):
            return False
        nxt = next_record(rec, start)
        if nxt is None:
            return False
        if not await self.store.compare_and_swap(kv.key, encode(nxt), kv.mod_revision):
            return False  # another node published it first
        log.info("network_keys_step", network=network, stage=nxt.stage, seq=nxt.seq, tx=nxt.tx)
        return True

    async def ack(self, network: str, node: str, seq: int, epoch: int, lease: int) -> None:
        value = KeyAck(network=network, node=node, seq=seq, epoch=epoch)
        await self.store.put(self.keys.key_ack(network, node), encode(value), lease=lease)
