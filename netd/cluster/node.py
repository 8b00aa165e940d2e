"""One object for the daemon: this node's store, membership, IPAM, networks and cache, built from ``[cluster]``.

The daemon imports this module only when ``settings.cluster`` is set::

    if settings.cluster is not None:
        from netd.cluster.cluster.node import ClusterNode       # loads aetcd/grpc (~17 MiB) only in cluster mode
        cluster = ClusterNode(settings.cluster, version=__version__, advertise_address=addr,
                              local_subnets=..., on_change=reconciler.cluster_changed)
        await cluster.start()                        # ClusterUnavailableError: etcd unreachable at start
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, Any

from netd.cluster.cache import ClusterCache, OnChange
from netd.cluster.ipam import ClusterIpam
from netd.cluster.keys import KeyLayout
from netd.cluster.membership import Membership
from netd.cluster.networks import ClusterNetworks
from netd.cluster.services import ClusterServices
from netd.cluster.store import ClusterStore
from netd.core.errors import InvalidError
from netd.core.model import IPAddress, IPNetwork

if TYPE_CHECKING:
    from netd.core.config import Cluster


class ClusterNode:
    def __init__(
        self,
        cfg: Cluster,
        *,
        version: str,
        advertise_address: IPAddress | None = None,
        local_subnets: Iterable[IPNetwork] = (),
        on_change: OnChange | None = None,
        on_register: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        address = advertise_address or cfg.advertise_address
        if address is None:
            raise InvalidError(
                "[cluster] advertise_address is not set and no address was found on the default route's "
                "interface; set advertise_address to this node's underlay address",
                field="advertise_address",
            )
        self.cfg = cfg
        self.keys = KeyLayout(cfg.key_prefix)
        self.store = ClusterStore.from_config(cfg)
        self.membership = Membership(
            self.store,
            self.keys,
            name=cfg.node_name,
            advertise_address=address,
            version=version,
            vxlan_port=cfg.vxlan_port,
            ttl=cfg.lease_ttl,
            local_subnets=local_subnets,
            on_register=on_register,
        )
        self.ipam = ClusterIpam(self.store, self.keys, cfg.node_name)
        self.networks = ClusterNetworks(self.store, self.keys, self.ipam, cfg.node_name)
        self.services = ClusterServices(self.store, self.keys, self.ipam, cfg.node_name)
        self.cache = ClusterCache(self.store, self.keys, on_change)

    @property
    def pools(self) -> list[tuple[IPv4Network, int]]:
        return [(p.base, p.size) for p in self.cfg.overlay_address_pools]

    async def start(self) -> None:
        """Register this node (raises ClusterUnavailableError when etcd cannot be reached) and start the cache."""
        try:
            await self.membership.start()
        except BaseException:
            await self.store.close()
            raise
        self.cache.start()

    async def stop(self, *, leave: bool = False) -> None:
        """``leave=False`` (a restart): the lease runs out by itself and the others keep this node's entries
        until then; ``leave=True`` (shutting the node down for good): the others drop them now."""
        await self.cache.stop()
        await self.membership.stop(leave=leave)
        await self.store.close()

    def status(self) -> dict[str, Any]:
        """For ``netd-ctl status`` and ``/metrics``."""
        return {
            "node": self.cfg.node_name,
            "address": str(self.membership.address),
            "connected": self.cache.connected and self.store.connected,
            "registered": self.membership.lease_id != 0,
            "etcd_endpoints": self.cfg.etcd_endpoints,
            "revision": self.cache.revision,
            "nodes_alive": len(self.cache.alive()),
            "last_error": "" if self.cache.connected else self.cache.last_error,
        }
