"""The daemon in cluster mode: start (register, sync the cache, mirror the overlay networks, publish this
node's endpoints), the reconciler's overlay observer, the watch -> scoped reconcile worker, status and metrics.

The reconciler stays the one writer: a watch event only records which overlay networks changed and wakes the
worker, which asks the reconciler for a pass scoped to them; the observer then reads the cache (never etcd)
for the remote endpoints of alive nodes.  While etcd is unreachable the cache keeps its last view, so nothing
programmed is removed; when it is back the cache resyncs, reports what changed meanwhile, and the same path
programs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from netd.cluster.cache import Change
from netd.cluster.errors import ClusterUnavailableError
from netd.cluster.node import ClusterNode
from netd.cluster.records import EndpointRecord
from netd.core.actions import Scope
from netd.core.errors import InvalidError, NetdError
from netd.core.linkspec import ObservedHost
from netd.core.model import DesiredState, Endpoint, IPAddress, IPInterface, IPNetwork, Network
from netd.drivers.overlay import OVERLAY, OverlaySeen

from .encryption import Encryption
from .mesh import Mesh
from .mirror import network_from_record, peers_of
from .overlay import OverlayChanges
from .planes import routing_mesh, service_lb
from .publish import publish
from .service_dns import service_names
from .service_lb import ServiceLb, touches_services
from .service_spec import service_port_holders
from .services import ServiceOps

if TYPE_CHECKING:
    from netd.core.config import Settings
    from netd.dns.server import DnsServer
    from netd.engine.reconciler import Reconciler
    from netd.engine.service import Service
    from netd.kernel.facade import Kernel


class Daemon(Protocol):
    """The parts of the daemon cluster mode works with (netd.daemon.Daemon)."""

    settings: Settings
    kernel: Kernel
    service: Service
    reconciler: Reconciler
    dns: DnsServer
    firewall: Any


log = structlog.get_logger("netd.multihost")

PUBLISH_EVERY = 30.0  # seconds between checks that etcd holds exactly this node's endpoints
OVERHEAD = 50  # VXLAN over IPv4


class MultiHost:
    def __init__(self, daemon: Daemon) -> None:
        cfg = daemon.settings.cluster
        assert cfg is not None
        self.daemon = daemon
        self.cfg = cfg
        self.cluster: ClusterNode | None = None
        self.address: IPAddress | None = None
        self.underlay_mtu = 1500
        self._pending: set[str] = set()
        self._all = False
        self._since: float | None = None
        self._wake = asyncio.Event()
        self._publish_soon = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.services: ServiceOps | None = None
        self.lb: ServiceLb | None = None
        self.mesh: Mesh | None = None  # the routing mesh (services' published ports on this node)
        self.latency: Any = None  # the event -> kernel histogram (registered by ``register_metrics``)
        self.encryption: Encryption | None = None  # encrypted overlays (issue 17), made at start

    # -- start / stop ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Before the start-up reconcile: raises a NetdError (etcd unreachable, no underlay address) and the
        daemon does not start."""
        d = self.daemon
        addr = self.cfg.advertise_address or await d.kernel.default_route_address(4)
        if addr is None:
            raise InvalidError(
                "[cluster] advertise_address is not set and this host has no IPv4 default route to take it "
                "from; set advertise_address to this node's underlay address",
                field="advertise_address",
            )
        self.address = addr
        self.underlay_mtu = await d.kernel.underlay_mtu(addr)
        self.cluster = ClusterNode(
            self.cfg,
            version=_version(),
            advertise_address=addr,
            local_subnets=self._local_subnets(d.service.state),
            on_change=self._on_change,
            on_register=self._registered,
        )
        try:
            await self.cluster.start()
        except ClusterUnavailableError as e:
            raise NetdError(f"{e.message} (netd does not start in cluster mode without etcd)") from e
        if not await self.cluster.cache.wait_for(lambda c: c.synced, self.cfg.request_timeout):
            await self.cluster.stop()
            raise NetdError(
                "cluster store unreachable: the first read of the cluster's state did not finish within "
                f"{self.cfg.request_timeout:g} s; check etcd ([cluster] etcd_endpoints)"
            )
        d.service.overlay = overlay = OverlayChanges(d.service, self.cluster, self.default_mtu)
        self.services = overlay.services = ServiceOps(self.cluster, lambda: d.service.state)
        if d.firewall.name in ("nftables", "iptables"):
            self.lb = service_lb(self.cluster, lambda: d.service.state, self._netns_path, d.firewall.name)
            self.mesh = routing_mesh(self.cluster, lambda: d.service.state, d.firewall.name, self._mesh_address)
        cache = self.cluster.cache
        d.service.port_holders = lambda: service_port_holders(cache.services().values())
        d.reconciler.observers.append(self.observe)
        d.dns.remote = self.remote_names
        await self.mirror()
        await self._publish()
        self.encryption = Encryption(self)
        log.info("cluster_joined", node=self.cfg.node_name, address=str(addr), underlay_mtu=self.underlay_mtu)

    def run(self) -> list[asyncio.Task[None]]:
        self._tasks = [
            asyncio.create_task(self._worker(), name="netd-overlay-worker"),
            asyncio.create_task(self._publisher(), name="netd-overlay-publisher"),
        ]
        if self.lb is not None:
            self._tasks.append(asyncio.create_task(self.lb.run(), name="netd-service-lb"))
        if self.mesh is not None:
            self._tasks.append(asyncio.create_task(self.mesh.run(), name="netd-routing-mesh"))
        if self.encryption is not None:
            self._tasks.append(asyncio.create_task(self.encryption.run(), name="netd-overlay-encryption"))
        return self._tasks

    def _netns_path(self, ep: Endpoint) -> str:
        return self.daemon.kernel.netns_path(ep.netns) if ep.netns is not None else (ep.netns_path or "")

    def _mesh_address(self, net_id: str) -> None:
        """This node's ingress address was taken: its ingress bridge and VXLAN device are made by a pass."""
        self._pending.add(net_id)
        self._wake.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.lb is not None:
            await self.lb.close()
        if self.mesh is not None:
            await self.mesh.close()
        if self.encryption is not None:
            self.encryption.close()
        if self.cluster is not None:
            await self.cluster.stop(leave=False)

    def service_ops(self) -> ServiceOps:
        assert self.services is not None
        return self.services

    def default_mtu(self) -> int:
        return self.underlay_mtu - OVERHEAD

    # -- desired state <- cluster ------------------------------------------------------------------------------

    async def mirror(self) -> None:
        """Make this node's copies of the overlay networks those of the cache (a network that went stays while
        this node still has endpoints on it)."""
        assert self.cluster is not None
        svc = self.daemon.service
        recs = self.cluster.cache.networks()
        async with svc.lock:
            state = svc.state
            new = state.copy_for_change()
            changed: set[str] = set()
            current = {n.id: n for n in state.networks.values() if n.driver == OVERLAY}
            for rec in recs.values():
                net = network_from_record(rec, self.default_mtu())
                clash = state.networks.get(net.name)
                if clash is not None and clash.id != net.id:
                    log.warning("overlay_network_name_taken", network=net.name, local_id=clash.id[:12])
                    continue
                old = current.get(net.id)
                if old != net:
                    if old is not None and old.name != net.name:
                        new.networks.pop(old.name, None)
                    new.networks[net.name] = net
                    changed.add(net.id)
            for net_id, old in current.items():
                if net_id not in recs and not state.endpoints_of(net_id):
                    new.networks.pop(old.name, None)
                    changed.add(net_id)
            if changed:
                await svc._commit(new, Scope.of(networks=changed), "cluster networks changed")

    async def _publish(self) -> None:
        assert self.cluster is not None
        svc = self.daemon.service
        await publish(self.cluster, lambda: svc.state, svc.lock)
        subnets = self._local_subnets(svc.state)
        if subnets != self.cluster.membership.local_subnets:  # automatic overlay subnets stay clear of them
            await self.cluster.membership.set_local_subnets(subnets)

    async def _registered(self) -> None:
        self._publish_soon.set()

    def state_changed(self, state: DesiredState) -> None:
        """After every local commit: endpoints may have gone without an overlay call (netns rm, prune), local
        networks may have come or gone.  While etcd is unreachable the publisher waits for the reconnect."""
        self._publish_soon.set()
        if self.lb is not None:  # a namespace joined or left a service's network
            self.lb.wake()
        if self.mesh is not None:  # a local task came or went (mode=host), a -p port
            self.mesh.wake()
        if self.encryption is not None:
            self.encryption.poke()

    @staticmethod
    def _local_subnets(state: DesiredState) -> list[IPNetwork]:
        return sorted({c.subnet for n in state.networks.values() if n.driver != OVERLAY for c in n.ipam}, key=str)

    async def _publisher(self) -> None:
        assert self.cluster is not None
        cache = self.cluster.cache
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._publish_soon.wait(), PUBLISH_EVERY)
            if not cache.connected:  # the resync after the reconnect asks again; the timer tries meanwhile
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cache.wait_for(lambda c: c.connected, PUBLISH_EVERY), PUBLISH_EVERY)
            self._publish_soon.clear()
            try:
                await self._publish()
            except ClusterUnavailableError as e:
                log.debug("overlay_publish_postponed", error=e.message)
            except Exception:
                log.exception("overlay_publish_failed")

    # -- watch -> reconcile ------------------------------------------------------------------------------------

    async def _on_change(self, change: Change) -> None:
        kinds = change.kinds()
        if touches_services(change):  # names and load balancing of services, on every node
            self.daemon.dns.invalidate()
            if self.lb is not None:
                self.lb.wake()
        if self.mesh is not None and (touches_services(change) or kinds & {"network", "address"}):
            self.mesh.wake()
        if self.encryption is not None:  # keys, acks, endpoints, nodes: its own pass decides what matters
            self.encryption.poke()
        if "network" in kinds:
            await self.mirror()
        if change.resync:
            self._publish_soon.set()
        # what changes this node's kernel: other nodes' endpoints, nodes coming and going (their address is in
        # the alive record); not address allocations, node records or this node's own endpoints
        me = self.cfg.node_name
        nets: set[str] = set()
        for key, parsed in change.parsed.items():
            if parsed.kind == "endpoint" and parsed.parent is not None:
                rec = change.puts.get(key) or change.deletes.get(key)
                if not (isinstance(rec, EndpointRecord) and rec.node == me):
                    nets.add(parsed.parent)
            elif parsed.kind == "network":
                nets.add(parsed.name)
        if not nets and not (change.resync or "alive" in kinds):
            return
        self._all = self._all or change.resync or "alive" in kinds
        self._pending |= nets
        if self._since is None:
            self._since = time.perf_counter()
        self.daemon.dns.invalidate()
        self._wake.set()

    async def _worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            state = self.daemon.service.state
            active = self._active(state)
            nets = active if self._all else self._pending & active
            since, self._since = self._since, None
            self._pending, self._all = set(), False
            if not nets:
                continue
            try:
                await self.daemon.reconciler.apply(Scope.of(networks=nets), "cluster change")
            except Exception:
                log.exception("overlay_reconcile_failed")
                continue
            if since is not None and self.latency is not None:
                self.latency.observe(time.perf_counter() - since)

    # -- the reconciler's overlay observer (reads the cache, never etcd) ---------------------------------------

    async def observe(self, state: DesiredState, scope: Scope, host: ObservedHost) -> dict[str, Any]:
        assert self.cluster is not None and self.address is not None
        cache = self.cluster.cache
        seen = OverlaySeen(
            node=self.cfg.node_name,
            local=self.address,
            port=self.cfg.vxlan_port,
            active=self._active(state),
            underlay_mtu=self.underlay_mtu,
        )
        held = self.mesh.address() if self.mesh is not None else None
        if held is not None:
            seen.sbox[held[0]] = held[1]
        alive = cache.alive()
        kernel = self.daemon.kernel
        for net in state.networks.values():
            if net.id not in seen.active or not scope.has_network(net.id):
                continue
            try:
                vx = await kernel.observe_vxlan(net.vxlan)
            except NetdError as e:  # another kind of link has the name: the ensure reports it
                log.warning("overlay_observe_failed", network=net.name, error=e.message)
                vx = None
            seen.vxlan[net.id] = vx
            if vx is not None:
                seen.entries[net.id] = await kernel.observe_vxlan_entries(net.vxlan, vx.index)
            seen.peers[net.id] = peers_of(cache.endpoints(net.id), alive, self.cfg.node_name)
        return {OVERLAY: seen}

    def remote_names(self, net: Network) -> Iterable[tuple[list[str], IPInterface | None, IPInterface | None]]:
        if self.cluster is None or net.driver != OVERLAY:
            return []
        me = self.cfg.node_name
        cache = self.cluster.cache
        alive = cache.alive()
        eps = cache.endpoints(net.id)
        pool = net.pool(4)
        return [
            *(
                ([n for n in (rec.name, *rec.aliases) if n], rec.ipv4, rec.ipv6)
                for rec in eps
                if rec.node != me and rec.node in alive
            ),
            # after the endpoints' own names: those keep the PTR records of their addresses
            *service_names(net.id, cache.services(), eps, alive, pool.subnet.prefixlen if pool else 32),
        ]

    def programmed(self) -> int:
        """Remote endpoints this node programs (on its overlay networks with local endpoints)."""
        if self.cluster is None:
            return 0
        alive = self.cluster.cache.alive()
        return sum(
            len(peers_of(self.cluster.cache.endpoints(n), alive, self.cfg.node_name))
            for n in self._active(self.daemon.service.state)
        )

    # -- status ------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        if self.cluster is None:
            return {"connected": False}
        st = self.cluster.status()
        st["underlay_mtu"] = self.underlay_mtu
        st["remote_endpoints_programmed"] = self.programmed()
        if self.lb is not None:
            st["service_lb_namespaces"] = len(self.lb.namespaces)
        if self.mesh is not None:
            st["routing_mesh"] = self.mesh.status()
        if self.encryption is not None:
            st["encryption"] = self.encryption.status()
        return st

    def _active(self, state: DesiredState) -> set[str]:
        """Overlay networks with endpoints on this node, and the ingress network once this node holds its
        address there (every node is on it: the routing mesh answers on nodes without a task too)."""
        held = self.mesh.address() if self.mesh is not None else None
        active = _active(state)
        return (
            active | {held[0]}
            if held is not None and held[0] in {n.id for n in state.networks.values()}
            else active
        )


def _active(state: DesiredState) -> set[str]:
    """Overlay networks with endpoints on this node."""
    overlay = {n.id for n in state.networks.values() if n.driver == OVERLAY}
    return {ep.network for ep in state.endpoints.values() if ep.network in overlay}


def _version() -> str:
    from netd import __version__

    return __version__
