"""Overlay network definitions in etcd: create (name, VNI and subnets reserved, all or nothing) and remove
(refused while any node has an endpoint on the network).

The driver parses the user's options (``vxlanid_list``, ``mtu``, ``encrypted`` ...) into a :class:`NetworkDraft`;
this module only makes the cluster agree.  A create that fails at any step releases what it had reserved, so
no half-created network stays in etcd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network

import structlog

from netd.cluster.errors import ClusterUnavailableError
from netd.cluster.ingress import is_sbox
from netd.cluster.ipam import DEFAULT_OVERLAY_POOLS, ClusterIpam
from netd.cluster.keys import KeyLayout
from netd.cluster.records import (
    VNI_MAX,
    VNI_MIN,
    EndpointRecord,
    NameReservation,
    OverlayNetwork,
    ServiceRecord,
    decode,
    encode,
    now,
)
from netd.cluster.store import ClusterStore
from netd.cluster.txn import Delete, Get, Put, absent, empty_prefix, present, unchanged_since
from netd.core import ipam as local_ipam
from netd.core.errors import ConflictError, InvalidError, NotFoundError
from netd.core.model import IpamConfig, IPNetwork

log = structlog.get_logger("netd.cluster")


VXLANID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"


def vni_from_options(options: dict[str, str]) -> int | None:
    """The VNI asked for with ``-o com.docker.network.driver.overlay.vxlanid_list=4097`` (Docker takes one VNI
    per subnet, comma-separated; netd's overlay networks have one VXLAN device, so one VNI)."""
    raw = options.get(VXLANID_OPTION)
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if len(parts) != 1 or not parts[0].isdigit():
        raise InvalidError(
            f"{VXLANID_OPTION}={raw!r}: give one VNI, a number from {VNI_MIN} to {VNI_MAX} (e.g. 4097)",
            field="options",
        )
    vni = int(parts[0])
    if not VNI_MIN <= vni <= VNI_MAX:
        raise InvalidError(
            f"{VXLANID_OPTION}={raw!r}: VNI {vni} is out of range {VNI_MIN}-{VNI_MAX}", field="options"
        )
    return vni


@dataclass
class NetworkDraft:
    id: str
    name: str
    vni: int | None = None  # None: the next free one from 4096
    subnet: str | None = None  # IPv4; None: the next free subnet of the overlay pools
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = field(default_factory=dict)
    subnet6: str | None = None  # IPv6 must be given explicitly (as in Docker)
    gateway6: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    attachable: bool = False
    internal: bool = False
    ingress: bool = False
    encrypted: bool = False
    mtu: int | None = None


class ClusterNetworks:
    def __init__(self, store: ClusterStore, keys: KeyLayout, ipam: ClusterIpam, node: str) -> None:
        self.store, self.keys, self.ipam, self.node = store, keys, ipam, node

    async def find(self, name: str) -> OverlayNetwork | None:
        held = await self.store.get(self.keys.network_name(name))
        if held is None:
            return None
        kv = await self.store.get(self.keys.network(decode(NameReservation, held.value).network))
        return decode(OverlayNetwork, kv.value) if kv is not None else None

    async def create(
        self, draft: NetworkDraft, pools: Sequence[tuple[IPv4Network, int]] = DEFAULT_OVERLAY_POOLS
    ) -> OverlayNetwork:
        if (draft.gateway or draft.ip_range or draft.aux_addresses) and not draft.subnet:
            raise InvalidError("--gateway, --ip-range and --aux-address need --subnet", field="subnet")
        if draft.gateway6 and not draft.subnet6:
            raise InvalidError("an IPv6 gateway needs an IPv6 --subnet", field="subnet")
        # check what can be checked before reserving anything
        wanted4 = (
            local_ipam.validate_pool(draft.subnet, draft.gateway, draft.ip_range, draft.aux_addresses)
            if draft.subnet
            else None
        )
        wanted6 = local_ipam.validate_pool(draft.subnet6, draft.gateway6) if draft.subnet6 else None
        if wanted4 is not None and wanted4.subnet.version != 4:
            raise InvalidError(
                f"subnet {wanted4.subnet} is not IPv4; pass an IPv6 subnet as subnet6", field="subnet"
            )
        if wanted6 is not None and wanted6.subnet.version != 6:
            raise InvalidError(f"subnet {wanted6.subnet} is not IPv6", field="subnet")
        if await self.store.get(self.keys.network_name(draft.name)) is not None:
            raise ConflictError(
                f"network {draft.name!r} already exists in the cluster; choose another name", field="name"
            )
        if draft.ingress:
            await self._check_no_ingress(draft.name)
        vni: int | None = None
        subnets: list[IPNetwork] = []
        try:
            vni = await self.ipam.allocate_vni(draft.id, draft.vni)
            ipam: list[IpamConfig] = []
            s4 = await self.ipam.allocate_subnet(draft.id, wanted4.subnet if wanted4 else None, pools)
            subnets.append(s4)
            ipam.append(wanted4 or local_ipam.validate_pool(str(s4)))
            if wanted6 is not None:
                subnets.append(await self.ipam.allocate_subnet(draft.id, wanted6.subnet))
                ipam.append(wanted6)
            net = OverlayNetwork(
                id=draft.id,
                name=draft.name,
                vni=vni,
                ipam=ipam,
                options=draft.options,
                attachable=draft.attachable,
                internal=draft.internal,
                ingress=draft.ingress,
                encrypted=draft.encrypted,
                enable_ipv6=wanted6 is not None,
                mtu=draft.mtu,
                created=now(),
                created_on=self.node,
            )
            name_key = self.keys.network_name(draft.name)
            ingress = [self.keys.ingress()] if draft.ingress else []  # one ingress: its marker, if absent
            result = await self.store.txn(
                f"create network {draft.name}",
                [absent(name_key), absent(self.keys.network(draft.id)), *(absent(k) for k in ingress)],
                [
                    Put(self.keys.network(draft.id), encode(net)),
                    Put(name_key, encode(NameReservation(network=draft.id))),
                    *(Put(k, encode(NameReservation(network=draft.id))) for k in ingress),
                ],
                [Get(name_key)],
            )
            if not result.succeeded:
                if draft.ingress:
                    await self._check_no_ingress(draft.name)
                raise ConflictError(
                    f"network {draft.name!r} was created on another node at the same moment", field="name"
                )
        except BaseException:
            await self._release(draft.id, vni, subnets)
            raise
        log.info(
            "cluster_network_created", network=draft.name, id=draft.id, vni=vni, subnets=[str(s) for s in subnets]
        )
        return net

    async def find_ingress(self) -> OverlayNetwork | None:
        """The cluster's ingress network (the routing mesh's), if one exists."""
        held = await self.store.get(self.keys.ingress())
        if held is None:
            return None
        kv = await self.store.get(self.keys.network(decode(NameReservation, held.value).network))
        return decode(OverlayNetwork, kv.value) if kv is not None else None

    async def _check_no_ingress(self, name: str) -> None:
        existing = await self.find_ingress()
        if existing is not None:
            raise ConflictError(
                f"Ingress: network {name!r} not created: the cluster has an ingress network already "
                f"({existing.name!r}) and only one may exist; use it, or remove it first "
                f"(netd-ctl network rm {existing.name})",
                field="Ingress",
            )

    async def _release(self, net_id: str, vni: int | None, subnets: list[IPNetwork]) -> None:
        with contextlib.suppress(ClusterUnavailableError):  # best effort: etcd went away half-way
            if vni is not None:
                await self.ipam.release_vni(vni, net_id)
            for s in subnets:
                await self.ipam.release_subnet(s, net_id)

    async def remove(self, name: str) -> OverlayNetwork:
        """Remove the network and its reservations, atomically, only if no node has an endpoint on it."""
        net = await self.find(name)
        if net is None:
            raise NotFoundError(f"overlay network {name!r} not found in the cluster", field="network")
        eps = self.keys.endpoints_of(net.id)
        svcs = self.keys.section("services")
        held_svcs, revision = await self.store.get_prefix(svcs)
        records = [r for r in (_service(kv.value) for kv in held_svcs) if r is not None]
        users = sorted(r.name for r in records if net.id in r.networks)
        if users:
            raise ConflictError(
                f"network {name!r} is used by service(s) {', '.join(users)}; remove them first "
                "(netd-ctl service rm NAME)",
                field="network",
            )
        mesh = sorted(r.name for r in records if any(p.published and p.mode == "ingress" for p in r.ports))
        if net.ingress and mesh:
            raise ConflictError(
                f"network {name!r} is the ingress network and service(s) {', '.join(mesh)} publish ports through "
                "it (the routing mesh); remove them first (netd-ctl service rm NAME)",
                field="network",
            )
        deletes = [
            Delete(self.keys.network(net.id)),
            Delete(self.keys.network_name(net.name)),
            Delete(self.keys.vni(net.vni)),
            *(Delete(self.keys.subnet(c.subnet)) for c in net.ipam),
            Delete(self.keys.addresses_of(net.id), prefix=True),  # gateway-less leftovers of crashed connects
            Delete(self.keys.network_key(net.id)),  # an encrypted network's keys and the nodes' acks go with it
            Delete(self.keys.key_acks_of(net.id), prefix=True),
            *([Delete(self.keys.ingress())] if net.ingress else []),
        ]
        no_endpoints = empty_prefix(eps)
        if net.ingress:  # the nodes' ingress-sbox records go with it (nothing else may be on it)
            held_eps, ep_rev = await self.store.get_prefix(eps)
            if all(is_sbox(kv.key.rsplit("/", 1)[-1]) for kv in held_eps):
                no_endpoints = unchanged_since(eps, ep_rev)
                deletes.append(Delete(eps, prefix=True))
        result = await self.store.txn(
            f"remove network {name}",
            [present(self.keys.network(net.id)), no_endpoints, unchanged_since(svcs, revision)],
            deletes,
        )
        if not result.succeeded:
            held, _ = await self.store.get_prefix(eps)
            if not held:
                raise ConflictError(
                    f"network {name!r}: a service was created or changed at the same moment; try again",
                    field="network",
                )
            held = [kv for kv in held if not is_sbox(kv.key.rsplit("/", 1)[-1])]
            if not held:
                raise ConflictError(
                    f"network {name!r}: a node's ingress endpoint changed at the same moment; try again",
                    field="network",
                )
            nodes = sorted({decode(EndpointRecord, kv.value).node for kv in held})
            raise ConflictError(
                f"network {name!r} has {len(held)} endpoint(s) on node(s) {', '.join(nodes) or '?'}; disconnect "
                "them first (network disconnect on those nodes)",
                field="network",
            )
        log.info("cluster_network_removed", network=name, id=net.id)
        return net


def _service(value: bytes) -> ServiceRecord | None:
    try:
        return decode(ServiceRecord, value)
    except ValueError:
        return None
