"""The routing mesh (issue 16): services' published ports answered on this node's own addresses.

What netd does, on every node, in the node's own namespace (the LB table ``ip netd-lb``, or the ``NETDLB-*``
iptables chains, of the daemon's namespace; the rules come from ``netd.firewall.lb_model.build_lb``):

* ``PublishMode=ingress`` (the default): a connection to any local address on the published port (TCP or UDP)
  is DNAT'd to one of the service's tasks at its address on the **ingress network**, picked by the same
  numgen/jhash spread as a VIP, and SNAT'd to the node's own address on the ingress network (its
  *ingress-sbox* address, ``netd.cluster.ingress``), which sits on the node's ingress bridge beside the
  gateway.  The connection crosses the overlay like any endpoint-to-endpoint traffic; the task answers the
  node's ingress address (a remote endpoint to every other node: FDB and neighbour entries like a task's), so
  the reply comes back through the node that took the connection, which undoes both translations.  Every
  node answers, with a task or not, as soon as it has its ingress address.
* ``PublishMode=host``: only nodes with a task of the service answer, DNAT'd straight to a local task at its
  address on ``docker_gwbridge`` (the bridge network every overlay endpoint leaves through: routed, reachable
  from the node, and its replies take the task's default route back through the node), keeping the client's
  address as a ``-p`` port does.  The ingress network is not used: a service with only host ports has no
  business there, as in Docker.

How it differs from Docker: Docker DNATs the published port on the host to a per-node ``ingress-sbox``
namespace (an endpoint on the ingress network), where IPVS balances over the tasks and SNATs to the sandbox's
address.  netd has no sandbox: the node itself holds the sandbox's address on its ingress bridge and one nat
table does what Docker's host DNAT + sandbox IPVS + SNAT do, with the LB machinery the VIPs already use (one
map element per published port, a spread chain, deltas when tasks come and go, conntrack entries of departed
tasks flushed).  One hop less, no namespace to keep alive, and ``nft list table ip netd-lb`` shows all of it.

A pass runs on every cluster change that touches services, tasks, nodes or networks, on every local commit,
and every ``CHECK_EVERY`` seconds as a repair pass (the table is read back and replaced when flushed or
edited).  A published port that an endpoint of this node publishes with ``-p`` too is left out here (logged
once): the API refuses that clash on both sides, this covers one made on another node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

import structlog

from netd.cluster.errors import ClusterUnavailableError
from netd.cluster.ingress import held_sbox, is_sbox, sbox_id, sbox_record, take_sbox_address
from netd.cluster.node import ClusterNode
from netd.cluster.records import EndpointRecord, OverlayNetwork, ServiceRecord, encode
from netd.core.model import DesiredState
from netd.drivers.overlay import bridge_mac
from netd.firewall.lb import LbBackend
from netd.firewall.lb_model import Backend, LbInputError, LbNode, LbRuleset, PortSpec, Service, build_lb

from .service_lb import pass_loop

log = structlog.get_logger("netd.multihost")

CHECK_EVERY = 2.0  # seconds between repair passes
GWBRIDGE = "docker_gwbridge"


@dataclass(frozen=True)
class HostTarget:
    """A local task's address on docker_gwbridge (``mode=host`` ports DNAT to it)."""

    task: str  # the task's endpoint id on its service network
    service: str
    address: IPv4Address


def ingress_of(networks: Iterable[OverlayNetwork]) -> OverlayNetwork | None:
    return next((n for n in networks if n.ingress), None)


def host_targets(state: DesiredState) -> list[HostTarget]:
    """This node's tasks with their docker_gwbridge address (from the local desired state)."""
    gw = state.networks.get(GWBRIDGE)
    if gw is None:
        return []
    out = []
    for ep in state.endpoints.values():
        if not ep.service or ep.gw_for is not None:
            continue
        net = state.network_by_id(ep.network)
        if net is None or net.driver != "overlay" or net.ingress:
            continue
        way_out = next((e for e in state.endpoints_in(ep.target) if e.network == gw.id and e.ipv4), None)
        if way_out is not None and way_out.ipv4 is not None:
            out.append(HostTarget(ep.id, ep.service, way_out.ipv4.ip))
    return sorted(out, key=lambda t: (t.service, int(t.address)))


def local_port_taken(state: DesiredState) -> set[tuple[str, int]]:
    """(proto, port) that an endpoint of this node publishes on IPv4 with ``-p``."""
    return {
        (m.proto, m.host_port)
        for ep in state.endpoints.values()
        for m in ep.ports
        if m.host_ip is None or m.host_ip.version == 4
    }


def mesh_lb(
    services: Iterable[ServiceRecord],
    tasks: Iterable[EndpointRecord],
    alive: Iterable[str],
    node: str,
    ingress: OverlayNetwork | None,
    source: IPv4Address | None,
    local: Iterable[HostTarget] = (),
    taken: Iterable[tuple[str, int]] = (),
) -> LbRuleset:
    """This node's routing-mesh rules (pure): ingress ports spread over the tasks' ingress addresses on alive
    nodes (only once this node has its ingress ``source`` address), host ports over the local ``local``
    targets; ports in ``taken`` (``-p`` of a local endpoint) are left out."""
    up, skip = set(alive), set(taken)
    on_ingress: dict[str, list[Backend]] = {}
    if ingress is not None and source is not None:
        for t in tasks:
            if t.service and t.network == ingress.id and t.node in up and t.ipv4 is not None and not is_sbox(t.id):
                on_ingress.setdefault(t.service, []).append(Backend(t.id, t.ipv4.ip, ingress.name, t.node))
    by_service: dict[str, list[Backend]] = {}
    for h in local:
        by_service.setdefault(h.service, []).append(Backend(h.task, h.address, GWBRIDGE, node))
    models = []
    for svc in services:
        ports = [p for p in svc.ports if p.published is not None and (p.protocol, p.published) not in skip]
        mesh = tuple(PortSpec(p.protocol, p.published, p.target, "ingress") for p in ports if p.mode == "ingress")
        host = tuple(PortSpec(p.protocol, p.published, p.target, "host") for p in ports if p.mode == "host")
        if mesh and ingress is not None:
            models.append(_model(svc, ingress.name, mesh, on_ingress.get(svc.name, [])))
        if host:
            models.append(_model(svc, GWBRIDGE, host, by_service.get(svc.name, [])))
    ingress_name = ingress.name if ingress is not None and source is not None else None
    return build_lb(models, LbNode(node, ingress_network=ingress_name, ingress_source=source))


def _model(svc: ServiceRecord, network: str, ports: tuple[PortSpec, ...], backends: list[Backend]) -> Service:
    # dnsrr: no VIP chains here (the VIPs live in the namespaces, service_lb.py); published ports only
    return Service(
        name=svc.name,
        vips=((network, IPv4Address(0)),),
        ports=ports,
        endpoint_mode="dnsrr",
        stickiness=svc.stickiness,
        backends=tuple(backends),
    )


class Mesh:
    def __init__(
        self,
        cluster: ClusterNode,
        get_state: Callable[[], DesiredState],
        backend: LbBackend,
        on_address: Callable[[str], None],
    ) -> None:
        self.cluster = cluster
        self.node = cluster.cfg.node_name
        self.get_state = get_state
        self.backend = backend
        self.on_address = on_address  # this node's ingress address came or changed: reconcile that network
        self.applied: LbRuleset | None = None
        self._failed = ""
        self._clashes: frozenset[tuple[str, int]] = frozenset()
        self._wake = asyncio.Event()
        self.passes = 0

    def wake(self) -> None:
        self._wake.set()

    def ingress(self) -> OverlayNetwork | None:
        return ingress_of(self.cluster.cache.networks().values())

    def address(self) -> tuple[str, IPv4Interface] | None:
        """(ingress network id, this node's address on it) once taken (the cache's view)."""
        net = self.ingress()
        if net is None:
            return None
        addr = held_sbox(self.cluster.cache.allocations(net.id), self.node)
        pool = net.pool(4)
        if addr is None or pool is None:
            return None
        return net.id, IPv4Interface(f"{addr}/{pool.subnet.prefixlen}")

    async def run(self) -> None:
        await pass_loop(self._wake, CHECK_EVERY, self.sync, "mesh_pass_failed")

    async def _ensure_address(self, net: OverlayNetwork) -> None:
        """Take this node's ingress address (once), and put its endpoint record back if it went missing."""
        cache = self.cluster.cache
        allocs = cache.allocations(net.id)
        mac = bridge_mac(net.id, self.node)
        have = held_sbox(allocs, self.node)
        try:
            if have is None:
                await take_sbox_address(self.cluster.ipam, self.cluster.keys, net, self.node, mac, allocs)
                self.on_address(net.id)
                return
            if not any(r.id == sbox_id(self.node) for r in cache.endpoints(net.id)):
                pool = net.pool(4)
                assert pool is not None
                iface = IPv4Interface(f"{have}/{pool.subnet.prefixlen}")
                key = self.cluster.keys.endpoint(net.id, sbox_id(self.node))
                await self.cluster.store.put(key, encode(sbox_record(net, self.node, iface, mac)))
        except ClusterUnavailableError as e:
            log.debug("mesh_address_postponed", error=e.message)

    def desired(self) -> LbRuleset:
        cache = self.cluster.cache
        state = self.get_state()
        net = self.ingress()
        held = self.address()
        tasks = [r for r in cache.endpoints() if r.service]
        services = cache.services().values()
        taken = local_port_taken(state)
        published = {(p.protocol, p.published) for s in services for p in s.ports if p.published is not None}
        clashes = frozenset(taken & published)
        if clashes != self._clashes:
            self._clashes = clashes
            if clashes:
                log.error(
                    "mesh_port_clash",
                    ports=sorted(f"{port}/{proto}" for proto, port in clashes),
                    hint="a service publishes a port an endpoint of this node publishes with -p; this node does "
                    "not answer the service on it: disconnect the endpoint or publish the service elsewhere",
                )
        source = held[1].ip if held is not None else None
        return mesh_lb(services, tasks, cache.alive(), self.node, net, source, host_targets(state), clashes)

    async def sync(self, check: bool = False) -> bool:
        """One pass; True when the kernel was changed."""
        self.passes += 1
        net = self.ingress()
        if net is not None and self.cluster.cache.connected:
            await self._ensure_address(net)
        try:
            want = self.desired()
        except LbInputError as e:  # a record another netd version wrote: skip the pass, loudly
            log.error("mesh_bad_service", error=str(e))
            return False
        if self.applied == want and not (check and not await self.backend.in_sync(want)):
            return False
        try:
            done = await self.backend.apply(want)
        except Exception as e:
            self.applied = None
            if self._failed != str(e):
                log.error("mesh_apply_failed", error=str(e))
            self._failed = str(e)
            return False
        self.applied, self._failed = want, ""
        if done.mode != "none":
            log.info(
                "mesh_applied",
                ports=len(want.published),
                mode=done.mode,
                commands=done.commands,
                flushed=done.flushed,
            )
        return done.mode != "none"

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.backend.close)

    def status(self) -> dict[str, object]:
        held = self.address()
        return {
            "ingress_address": str(held[1]) if held else None,
            "published_ports": len(self.applied.published) if self.applied else 0,
        }
