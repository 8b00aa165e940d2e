"""Cluster-wide IPAM: overlay addresses, VNIs and overlay subnets, each made unique by an etcd transaction.

The candidates come from the pure single-host IPAM (``netd.core.ipam``: gateway, ip-range, aux-addresses, pools);
what makes them unique across nodes is the transaction:

- an address: ``/addresses/<net>/<ip>`` is created only if it does not exist and the network still exists; on a
  conflict the next candidate is tried.  A retried request that finds its own endpoint id in the key succeeded.
- a VNI: ``/vnis/<vni>`` created only if absent (Docker's range: 4096 and up, or the one asked for).
- a subnet: overlaps are not a key clash, so the transaction also requires that no subnet reservation changed
  since the list it chose from (a range compare on ``/subnets/``); the candidates avoid every other overlay
  network and every node's local subnets (``/nodes/<name>.local_subnets``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Network

import structlog

from netd.cluster.keys import KeyLayout, parse_subnet_token
from netd.cluster.records import (
    VNI_AUTO_START,
    VNI_MAX,
    VNI_MIN,
    Allocation,
    NodeRecord,
    OverlayNetwork,
    SubnetReservation,
    VniReservation,
    decode,
    encode,
    now,
)
from netd.cluster.store import ClusterStore
from netd.cluster.txn import Delete, Get, Put, absent, mod_is, present, unchanged_since
from netd.core import ipam as local_ipam
from netd.core.errors import ConflictError, InvalidError, NotFoundError
from netd.core.model import IPAddress, IPNetwork

log = structlog.get_logger("netd.cluster")

SUBNET_RETRIES = 20  # a retry only happens when another node reserved a subnet at the same moment
DEFAULT_OVERLAY_POOLS: list[tuple[IPv4Network, int]] = [(IPv4Network("10.0.0.0/8"), 24)]


class ClusterIpam:
    def __init__(self, store: ClusterStore, keys: KeyLayout, node: str) -> None:
        self.store, self.keys, self.node = store, keys, node
        # per network, the addresses this node's in-flight allocations are trying: concurrent connects on one
        # node never race each other in etcd, only other nodes' connects
        self._pending: dict[str, set[IPAddress]] = {}

    # addresses
    async def allocate_address(
        self,
        net: OverlayNetwork,
        endpoint_id: str,
        requested: IPAddress | None = None,
        version: int = 4,
        held: Iterable[Allocation] | None = None,
        also: Callable[[IPAddress], Sequence[Put]] | None = None,
        node: str | None = None,
    ) -> IPAddress:
        """Reserve an address of ``net`` for ``endpoint_id``: ``requested`` (ConflictError if taken) or the
        first free one.  Idempotent for the same endpoint (a retry after a lost answer gets the same address).

        ``held``: the network's allocations as the caller's cache sees them (``ClusterCache.allocations``);
        saves reading them all from etcd per connect.  A stale view only costs a retry: etcd decides.
        ``also``: more keys to write in the allocating transaction, given the address (the endpoint's record:
        one etcd round trip per connect instead of two).
        ``node``: the allocation's node (default this node; a service's VIP belongs to none: ``""``)."""
        cfg = net.pool(requested.version if requested is not None else version)
        if cfg is None:
            fam = "IPv6" if (requested.version if requested else version) == 6 else "IPv4"
            raise InvalidError(f"network {net.name!r} has no {fam} subnet", field="ip")
        if held is None:
            held = await self._read(net.id)
        taken: set[IPAddress] = set()
        for alloc in held:
            addr = alloc.address
            mine = alloc.endpoint == endpoint_id and addr.version == cfg.subnet.version
            if mine and (requested is None or requested == addr):
                return addr  # this endpoint already holds one (a retried request)
            if addr == requested:
                raise _in_use(net, addr, alloc)
            taken.add(addr)
        pending = self._pending.setdefault(net.id, set())
        start: IPAddress | None = None
        while True:
            blocked = taken | pending if requested is None and pending else taken
            addr = local_ipam.allocate(cfg, blocked, requested, network=net.name, start=start)
            owner = self.node if node is None else node
            value = Allocation(network=net.id, address=addr, endpoint=endpoint_id, node=owner, created=now())
            pending.add(addr)
            try:
                result = await self.store.create(
                    self.keys.address(net.id, addr),
                    encode(value),
                    require=[present(self.keys.network(net.id))],
                    also=also(addr) if also is not None else (),
                )
            finally:
                pending.discard(addr)
            if result.succeeded:
                return addr
            existing = result.gets[0] if result.gets else None
            if existing is None:
                raise NotFoundError(f"network {net.name!r} was removed from the cluster", field="network")
            holder = _allocation(existing.value)
            if holder is not None and holder.endpoint == endpoint_id:
                return addr
            if requested is not None:
                raise _in_use(net, addr, holder)
            # another node is allocating in this network right now: take its allocations into account
            taken.add(addr)
            taken.update(a.address for a in await self._read(net.id) if a.endpoint != endpoint_id)
            start = addr + 1 if addr != cfg.subnet.broadcast_address else None

    async def _read(self, net_id: str) -> list[Allocation]:
        kvs, _ = await self.store.get_prefix(self.keys.addresses_of(net_id))
        return [a for a in (_allocation(kv.value) for kv in kvs) if a is not None]

    async def release_address(self, net_id: str, addr: IPAddress, endpoint_id: str) -> bool:
        """Free ``addr`` if ``endpoint_id`` holds it (a stale release never frees someone else's address)."""
        key = self.keys.address(net_id, addr)
        kv = await self.store.get(key)
        if kv is None:
            return False
        alloc = _allocation(kv.value)
        if alloc is not None and alloc.endpoint != endpoint_id:
            return False
        result = await self.store.txn(f"release {key}", [mod_is(key, kv.mod_revision)], [Delete(key)])
        return result.succeeded

    # VNIs
    async def allocate_vni(self, network_id: str, requested: int | None = None) -> int:
        if requested is not None:
            if not VNI_MIN <= requested <= VNI_MAX:
                raise InvalidError(
                    f"VNI {requested} is out of range: use {VNI_MIN}-{VNI_MAX} "
                    "(com.docker.network.driver.overlay.vxlanid_list)",
                    field="options",
                )
            if await self._take_vni(network_id, requested):
                return requested
            holder = await self.store.get(self.keys.vni(requested))
            other = decode(VniReservation, holder.value).network if holder is not None else "?"
            raise ConflictError(
                f"VNI {requested} is already used by overlay network {other}; choose another vxlanid_list value "
                "or omit it",
                field="options",
            )
        used, _ = await self.store.get_prefix(self.keys.section("vnis"))
        taken: set[int] = set()
        for kv in used:
            vni = int(kv.key.rsplit("/", 1)[1])
            with contextlib.suppress(ValueError):
                if vni >= VNI_AUTO_START and decode(VniReservation, kv.value).network == network_id:
                    return vni  # a retried request
            taken.add(vni)
        for vni in range(VNI_AUTO_START, VNI_MAX + 1):
            if vni not in taken and await self._take_vni(network_id, vni):
                return vni
        raise ConflictError("no free VNI left; remove unused overlay networks", field="options")

    async def _take_vni(self, network_id: str, vni: int) -> bool:
        key = self.keys.vni(vni)
        result = await self.store.create(key, encode(VniReservation(network=network_id)))
        if result.succeeded:
            return True
        existing = result.gets[0] if result.gets else None
        return existing is not None and decode(VniReservation, existing.value).network == network_id

    async def release_vni(self, vni: int, network_id: str) -> bool:
        return await self._release_owned(self.keys.vni(vni), network_id, VniReservation)

    # subnets
    async def allocate_subnet(
        self,
        network_id: str,
        requested: IPNetwork | None = None,
        pools: Sequence[tuple[IPv4Network, int]] = DEFAULT_OVERLAY_POOLS,
    ) -> IPNetwork:
        """Reserve ``requested`` (ConflictError if it overlaps another overlay network or a node's local
        network) or the first pool subnet clear of both."""
        for _ in range(SUBNET_RETRIES):
            held, revision = await self.store.get_prefix(self.keys.section("subnets"))
            overlays: dict[str, list[IPNetwork]] = {}
            for kv in held:
                res = _subnet_reservation(kv.value)
                if res is not None and res.network == network_id:
                    if requested is None or res.subnet == requested:
                        return res.subnet  # a retried request
                    continue
                owner = f"overlay network {res.network}" if res is not None else "a reservation"
                overlays.setdefault(owner, []).append(parse_subnet_token(kv.key.rsplit("/", 1)[1]))
            local = await self._local_subnets()
            if requested is not None:
                clash = local_ipam.overlapping(requested, overlays) or local_ipam.overlapping(requested, local)
                if clash is not None:
                    raise ConflictError(
                        f"subnet {requested} overlaps {clash[0]} ({clash[1]}); choose another --subnet",
                        field="subnet",
                    )
                subnet: IPNetwork = requested
            else:
                used = [s for nets in (*overlays.values(), *local.values()) for s in nets]
                subnet = local_ipam.choose_subnet(pools, used)
            key = self.keys.subnet(subnet)
            result = await self.store.txn(
                f"reserve subnet {subnet}",
                [absent(key), unchanged_since(self.keys.section("subnets"), revision)],
                [Put(key, encode(SubnetReservation(network=network_id, subnet=subnet)))],
                [Get(key)],
            )
            if result.succeeded:
                return subnet
            log.debug("subnet_reservation_raced", subnet=str(subnet))
        raise ConflictError(
            "could not reserve an overlay subnet: too many concurrent creates; try again", field="subnet"
        )

    async def _local_subnets(self) -> dict[str, list[IPNetwork]]:
        nodes, _ = await self.store.get_prefix(self.keys.section("nodes"))
        out: dict[str, list[IPNetwork]] = {}
        for kv in nodes:
            try:
                rec = decode(NodeRecord, kv.value)
            except ValueError:
                continue
            if rec.local_subnets:
                out[f"a local network of node {rec.name}"] = list(rec.local_subnets)
        return out

    async def release_subnet(self, subnet: IPNetwork, network_id: str) -> bool:
        return await self._release_owned(self.keys.subnet(subnet), network_id, SubnetReservation)

    async def _release_owned(
        self, key: str, network_id: str, cls: type[VniReservation] | type[SubnetReservation]
    ) -> bool:
        kv = await self.store.get(key)
        if kv is None:
            return False
        try:
            if decode(cls, kv.value).network != network_id:
                return False
        except ValueError:
            pass
        return (await self.store.txn(f"release {key}", [mod_is(key, kv.mod_revision)], [Delete(key)])).succeeded


def _in_use(net: OverlayNetwork, addr: IPAddress, alloc: Allocation | None) -> ConflictError:
    where = f" (endpoint on node {alloc.node})" if alloc is not None else ""
    return ConflictError(
        f"network {net.name!r}: {addr} is already in use{where}; pick another address or omit --ip",
        field="ip" if addr.version == 4 else "ip6",
    )


def _allocation(value: bytes) -> Allocation | None:
    try:
        return decode(Allocation, value)
    except ValueError:
        return None


def _subnet_reservation(value: bytes) -> SubnetReservation | None:
    try:
        return decode(SubnetReservation, value)
    except ValueError:
        return None
