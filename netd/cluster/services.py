"""Services in etcd: create (name reserved, a VIP per network from the network's cluster IPAM, all or nothing)
and remove (the record, its name and its VIPs in one transaction).

The caller (``netd.multihost.services``) has validated the input and decides what a service's tasks mean for
its removal; this module only makes the cluster agree.  A VIP is an address allocation like an endpoint's
(``/addresses/<network id>/<vip>``) held by ``vip:<service id>`` on no node (``node=""``), so neither a node's
publisher nor ``node rm`` ever frees it: only ``service rm`` does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import structlog

from netd.cluster.errors import ClusterUnavailableError
from netd.cluster.ipam import ClusterIpam
from netd.cluster.keys import KeyLayout
from netd.cluster.records import (
    OverlayNetwork,
    ServiceName,
    ServicePort,
    ServiceRecord,
    decode,
    encode,
    now,
)
from netd.cluster.store import ClusterStore
from netd.cluster.txn import Delete, Put, absent, present
from netd.core.errors import ConflictError, NotFoundError
from netd.core.model import IPAddress

log = structlog.get_logger("netd.cluster")

VIP_NODE = ""  # the node of a VIP's allocation: none


def vip_owner(service_id: str) -> str:
    """The ``endpoint`` field of a VIP's address allocation."""
    return f"vip:{service_id}"


@dataclass
class ServiceDraft:
    id: str
    name: str
    networks: list[OverlayNetwork]  # found in the cluster, in the order given
    ports: list[ServicePort] = field(default_factory=list)
    endpoint_mode: str = "vip"
    stickiness: str = "none"
    labels: dict[str, str] = field(default_factory=dict)


class ClusterServices:
    def __init__(self, store: ClusterStore, keys: KeyLayout, ipam: ClusterIpam, node: str) -> None:
        self.store, self.keys, self.ipam, self.node = store, keys, ipam, node

    async def find(self, name: str) -> ServiceRecord | None:
        held = await self.store.get(self.keys.service_name(name))
        if held is None:
            return None
        kv = await self.store.get(self.keys.service(decode(ServiceName, held.value).service))
        return decode(ServiceRecord, kv.value) if kv is not None else None

    async def list(self) -> list[ServiceRecord]:
        kvs, _ = await self.store.get_prefix(self.keys.section("services"))
        out = []
        for kv in kvs:
            with contextlib.suppress(ValueError):
                out.append(decode(ServiceRecord, kv.value))
        return sorted(out, key=lambda s: s.name)

    async def create(self, draft: ServiceDraft) -> ServiceRecord:
        name_key = self.keys.service_name(draft.name)
        if await self.store.get(name_key) is not None:
            raise ConflictError(
                f"service {draft.name!r} already exists in the cluster; choose another name or "
                f"netd-ctl service rm {draft.name}",
                field="name",
            )
        vips: dict[str, IPv4Address] = {}
        try:
            if draft.endpoint_mode == "vip":
                for net in draft.networks:
                    addr = await self.ipam.allocate_address(net, vip_owner(draft.id), version=4, node=VIP_NODE)
                    assert isinstance(addr, IPv4Address)
                    vips[net.id] = addr
            rec = ServiceRecord(
                id=draft.id,
                name=draft.name,
                networks=[n.id for n in draft.networks],
                vips=vips,
                ports=list(draft.ports),
                endpoint_mode="dnsrr" if draft.endpoint_mode == "dnsrr" else "vip",
                stickiness="source-ip" if draft.stickiness == "source-ip" else "none",
                labels=dict(draft.labels),
                created=now(),
                created_on=self.node,
            )
            result = await self.store.txn(
                f"create service {draft.name}",
                [
                    absent(name_key),
                    absent(self.keys.service(draft.id)),
                    *(present(self.keys.network(n.id)) for n in draft.networks),
                ],
                [
                    Put(self.keys.service(draft.id), encode(rec)),
                    Put(name_key, encode(ServiceName(service=draft.id))),
                ],
            )
            if not result.succeeded:
                if await self.store.get(name_key) is not None:
                    raise ConflictError(
                        f"service {draft.name!r} was created on another node at the same moment", field="name"
                    )
                raise NotFoundError(
                    "a network of the service was removed from the cluster meanwhile; see netd-ctl network ls",
                    field="network",
                )
        except BaseException:
            await self._release(draft.id, vips)
            raise
        log.info(
            "cluster_service_created",
            service=draft.name,
            id=draft.id,
            vips={k[:12]: str(v) for k, v in vips.items()},
        )
        return rec

    async def _release(self, service_id: str, vips: dict[str, IPv4Address]) -> None:
        with contextlib.suppress(ClusterUnavailableError):  # best effort: etcd went away half-way
            for net_id, addr in vips.items():
                await self.ipam.release_address(net_id, addr, vip_owner(service_id))

    async def remove(self, rec: ServiceRecord) -> None:
        """The record, its name and its VIPs, atomically (NotFoundError when it is gone already)."""
        vip_keys = [self.keys.address(net_id, addr) for net_id, addr in rec.vips.items()]
        result = await self.store.txn(
            f"remove service {rec.name}",
            [present(self.keys.service(rec.id))],
            [
                Delete(self.keys.service(rec.id)),
                Delete(self.keys.service_name(rec.name)),
                *(Delete(k) for k in vip_keys),
            ],
        )
        if not result.succeeded:
            raise NotFoundError(
                f"service {rec.name!r} not found in the cluster; see netd-ctl service ls", field="name"
            )
        log.info("cluster_service_removed", service=rec.name, id=rec.id)


def services_on(services: list[ServiceRecord], network_id: str) -> list[str]:
    """Names of the services that use ``network_id``."""
    return sorted(s.name for s in services if network_id in s.networks)


def vip_of(rec: ServiceRecord, network_id: str) -> IPAddress | None:
    return rec.vips.get(network_id)
