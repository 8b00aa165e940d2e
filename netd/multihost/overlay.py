"""The overlay changes the API asks for: etcd first (the cluster decides names, VNIs, subnets and addresses),
then this node's desired state (persist -> reconcile).  Every step that fails undoes the ones before it, so a
refused or failed request changes nothing, here or in etcd.  While etcd is unreachable each of them is refused
with ``cluster store unreachable: ...`` before anything is changed.  Called with the service lock held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from ipaddress import IPv4Interface, IPv6Interface, ip_interface

import structlog

from netd.cluster.errors import ClusterUnavailableError
from netd.cluster.networks import NetworkDraft
from netd.cluster.node import ClusterNode
from netd.cluster.records import Allocation, encode
from netd.cluster.txn import Delete, Put
from netd.core.actions import Scope
from netd.core.errors import ConflictError, InvalidError, KernelError, NotFoundError
from netd.core.ipam import overlapping
from netd.core.model import DesiredState, Endpoint, IPAddress, Network
from netd.core.naming import new_id
from netd.core.request import Connect, NetworkCreate
from netd.drivers import DriverOptions, get_driver, parse_network_create
from netd.drivers.overlay import OverlayOptions, overlay_mac
from netd.drivers.overlay_crypto import normalized_options
from netd.engine.networks import now
from netd.engine.nsident import free_ifname
from netd.engine.service import Service
from netd.kernel.xfrm import probe_esp

from .mirror import endpoint_record, network_from_record
from .services import ServiceOps

log = structlog.get_logger("netd.multihost")

GWBRIDGE = "docker_gwbridge"
GWBRIDGE_OPTIONS = {  # Docker's: its own bridge name, no traffic between endpoints, NAT to the outside
    "com.docker.network.bridge.name": GWBRIDGE,
    "com.docker.network.bridge.enable_icc": "false",
    "com.docker.network.bridge.enable_ip_masquerade": "true",
}


class OverlayChanges:
    def __init__(self, svc: Service, cluster: ClusterNode, default_mtu: Callable[[], int]) -> None:
        self.svc, self.cluster, self.default_mtu = svc, cluster, default_mtu
        self.services: ServiceOps | None = None  # checks --service (netd.multihost.services)

    @property
    def node(self) -> str:
        return self.cluster.cfg.node_name

    # -- networks ----------------------------------------------------------------------------------------------

    async def create_network(self, req: NetworkCreate, opts: DriverOptions) -> Network:
        assert isinstance(opts, OverlayOptions)
        svc = self.svc
        if req.name in svc.state.networks:
            raise ConflictError(f"network {req.name!r} already exists", field="name")
        if opts.encrypted:  # before etcd: a kernel without ESP refuses here, nothing is created anywhere
            try:
                await probe_esp()
            except KernelError as e:
                raise KernelError(
                    f"network {req.name!r} not created (-o encrypted): {e.message}", field="encrypted"
                ) from e
        p4 = next((p for p in req.pools if p.subnet and ":" not in p.subnet), None)
        p6 = next((p for p in req.pools if p.subnet and ":" in p.subnet), None)
        if p6 is not None and not req.enable_ipv6:
            raise InvalidError("an IPv6 subnet needs --ipv6", field="subnet")
        if req.enable_ipv6 and p6 is None:
            raise InvalidError("an overlay network with --ipv6 needs an IPv6 --subnet", field="subnet")
        local = {n.name: [c.subnet for c in n.ipam] for n in svc.state.networks.values()}
        for p in (p4, p6):
            if p is not None and p.subnet is not None:
                with contextlib.suppress(ValueError):
                    hit = overlapping(ip_interface(p.subnet).network, local)
                    if hit is not None:
                        raise ConflictError(
                            f"network {req.name!r}: subnet {p.subnet} overlaps network {hit[0]!r} ({hit[1]}); "
                            "pick another --subnet",
                            field="subnet",
                        )
        draft = NetworkDraft(
            id=new_id(),
            name=req.name,
            vni=opts.vni,
            subnet=p4.subnet if p4 else None,
            gateway=p4.gateway if p4 else None,
            ip_range=p4.ip_range if p4 else None,
            aux_addresses=dict(p4.aux_addresses) if p4 else {},
            subnet6=p6.subnet if p6 else None,
            gateway6=p6.gateway if p6 else None,
            options=normalized_options(req.options),
            encrypted=opts.encrypted,
            attachable=req.attachable,
            ingress=req.ingress,
            internal=req.internal,
            mtu=req.mtu,
        )
        rec = await self.cluster.networks.create(draft, self.cluster.pools)
        net = network_from_record(rec, self.default_mtu())
        new = svc.state.copy_for_change()
        new.networks[net.name] = net
        try:
            await svc._commit(new, Scope.of(networks=[net.id]), f"network create {net.name}")
        except BaseException:
            with contextlib.suppress(ClusterUnavailableError, ConflictError, NotFoundError):
                await self.cluster.networks.remove(net.name)
            raise
        log.info(
            "overlay_network_created", network=net.name, vni=net.vni, subnets=[str(c.subnet) for c in net.ipam]
        )
        return net

    async def remove_network(self, net: Network) -> None:
        svc = self.svc
        eps = svc.state.endpoints_of(net.id)
        if eps:
            names = ", ".join(sorted({ep.netns or ep.netns_path or "?" for ep in eps}))
            raise ConflictError(
                f"network {net.name!r} has active endpoints on this node ({names}); disconnect them first",
                field="name",
            )
        with contextlib.suppress(NotFoundError):  # already gone from the cluster: forget the local copy
            await self.cluster.networks.remove(net.name)
        new = svc.state.copy_for_change()
        new.networks.pop(net.name, None)
        await svc._commit(new, Scope.of(networks=[net.id]), f"network rm {net.name}")
        log.info("overlay_network_removed", network=net.name)

    # -- docker_gwbridge --------------------------------------------------------------------------------------

    async def _gateway_endpoint(self, new: DesiredState, ep: Endpoint, req: Connect) -> Endpoint | None:
        """The overlay endpoint's ``eth1`` on this node's docker_gwbridge network, which is made with Docker's
        defaults with the first overlay endpoint (a user-made network of that name is used as made).  None when
        the namespace is on docker_gwbridge already (one way out per namespace, as in Docker)."""
        svc = self.svc
        gw_net = new.networks.get(GWBRIDGE)
        if gw_net is not None and any(e.network == gw_net.id for e in new.endpoints_in(ep.target)):
            return None
        if gw_net is None:
            body = {"Name": GWBRIDGE, "Options": dict(GWBRIDGE_OPTIONS)}
            creq, opts = parse_network_create(body)
            gw_net = await svc.networks.build(creq, opts, new)
            new.networks[GWBRIDGE] = gw_net
        gw_ep = await svc._build_endpoint(gw_net, Connect(target=req.target, ipv4=None, ipv6=None))
        ifname = gw_ep.ifname
        if ifname == ep.ifname:  # the overlay endpoint is not in the state (nor the kernel) yet
            used = {e.ifname for e in new.endpoints_in(ep.target)}
            ifname = await free_ifname(req.target, used, self._has_link(ep))
        default = not any(e.default_route for e in new.endpoints_in(ep.target))
        return gw_ep.model_copy(update={"ifname": ifname, "gw_for": ep.id, "default_route": default})

    def _has_link(self, ep: Endpoint) -> Callable[[str], Awaitable[bool]] | None:
        path = self.svc.kernel.netns_path(ep.netns) if ep.netns is not None else (ep.netns_path or "")
        if self.svc.kernel.ns_probe(path).ident is None:
            return None
        return partial(self.svc.kernel.ns_has_link, path)

    # -- endpoints ---------------------------------------------------------------------------------------------

    async def connect(self, net: Network, req: Connect) -> Endpoint:
        svc = self.svc
        target = req.target
        inode, existing, has_link = svc.resolve_target(net, target)
        if req.service is None:
            get_driver(net).check_connect(net, svc.state)
        else:  # a service's task: non-attachable networks take them too, as in Docker
            assert self.services is not None
            await self.services.check_task(net, req)
        if req.ports:
            raise InvalidError(
                f"network {net.name!r} is an overlay network: it cannot publish ports; connect without -p "
                "(publish on a bridge network, or reach the endpoint at its overlay address)",
                field="publish",
            )
        rec = self.cluster.cache.networks().get(net.id)
        if rec is None:
            raise NotFoundError(f"network {net.name!r} is not in the cluster (any more); see netd-ctl network ls")
        ep_id = new_id()
        ipam = self.cluster.ipam
        held = self.cluster.cache.allocations(net.id)
        key = self.cluster.keys.endpoint(net.id, ep_id)
        ifname = await free_ifname(target, {e.ifname for e in existing}, has_link)
        p4, p6 = net.pool(4), net.pool(6)
        assert p4 is not None
        if req.ipv6 is not None and p6 is None:
            raise InvalidError(f"network {net.name!r} has no IPv6 subnet for {req.ipv6}", field="ip6")

        def build(addr4: IPAddress, addr6: IPAddress | None) -> Endpoint:
            v4 = ip_interface(f"{addr4}/{p4.subnet.prefixlen}")
            v6 = ip_interface(f"{addr6}/{p6.subnet.prefixlen}") if addr6 is not None and p6 is not None else None
            return Endpoint(
                id=ep_id,
                network=net.id,
                netns=target.netns,
                netns_path=target.netns_path,
                netns_inode=inode,
                ifname=ifname,
                host_ifname=get_driver(net).endpoint_host_ifname(ep_id),
                mac=overlay_mac(addr4),
                ipv4=v4 if isinstance(v4, IPv4Interface) else None,
                ipv6=v6 if isinstance(v6, IPv6Interface) else None,
                aliases=req.aliases,
                service=req.service,
                default_route=False,  # the way out is docker_gwbridge, never the overlay's gateway
                created=now(),
            )

        def record(addr4: IPAddress, addr6: IPAddress | None) -> list[Put]:
            # the endpoint's record goes in the transaction of its last address: one etcd write per connect
            return [Put(key, encode(endpoint_record(build(addr4, addr6), self.node)))]

        taken: list[IPAddress] = []
        companion: Endpoint | None = None
        try:
            if p6 is None:
                addr4 = await ipam.allocate_address(
                    rec, ep_id, req.ipv4, 4, held=held, also=lambda a: record(a, None)
                )
                taken.append(addr4)
                addr6 = None
            else:
                addr4 = await ipam.allocate_address(rec, ep_id, req.ipv4, 4, held=held)
                taken.append(addr4)
                addr6 = await ipam.allocate_address(
                    rec, ep_id, req.ipv6, 6, held=held, also=lambda a: record(addr4, a)
                )
                taken.append(addr6)
            ep = build(addr4, addr6)
            new = svc.state.copy_for_change()
            new.endpoints[ep.id] = ep
            nets, eps = {net.id}, {ep.id}
            gw_ep = None if net.internal else await self._gateway_endpoint(new, ep, req)
            if gw_ep is not None:  # the way out: eth1 on docker_gwbridge (default route, NAT)
                new.endpoints[gw_ep.id] = gw_ep
                nets.add(gw_ep.network)
                eps.add(gw_ep.id)
            companion = await self._ingress_endpoint(new, ep, req, has_link)
            if companion is not None:  # a task of a service publishing through the routing mesh
                new.endpoints[companion.id] = companion
                nets.add(companion.network)
                eps.add(companion.id)
            what = f"connect {target.describe()} to {net.name}"
            await svc._commit(new, Scope.of(networks=nets, endpoints=eps), what)
        except BaseException:
            if taken:  # the record and the addresses go together, as they came
                with contextlib.suppress(ClusterUnavailableError):
                    await self._forget(net.id, ep_id, taken)
                    if companion is not None and companion.ipv4 is not None:
                        await self._forget(companion.network, companion.id, [companion.ipv4.ip])
            raise
        log.info("overlay_endpoint_connected", network=net.name, target=ep.target, ip=str(ep.ipv4))
        return ep

    # -- the ingress network (routing mesh): a task joins it with its first service endpoint -----------------

    async def _ingress_endpoint(
        self, new: DesiredState, ep: Endpoint, req: Connect, has_link: Callable[[str], Awaitable[bool]] | None
    ) -> Endpoint | None:
        """The task's endpoint on the ingress network, as Docker attaches a service's tasks to ingress when
        the service publishes a port through the routing mesh; its address is taken (and its record written)
        here.  None: not a task of such a service, the task is on ingress already, or no ingress exists."""
        if req.service is None:
            return None
        cache = self.cluster.cache  # etcd when the watch has not brought them here yet (made a moment ago)
        rec = cache.services().get(req.service) or await self.cluster.services.find(req.service)
        if rec is None or not any(p.published is not None and p.mode == "ingress" for p in rec.ports):
            return None
        ing = next((n for n in cache.networks().values() if n.ingress), None)
        if ing is None:
            ing = await self.cluster.networks.find_ingress()
        if ing is None or ing.id == ep.network:
            return None
        if any(e.network == ing.id for e in new.endpoints_in(ep.target)):
            return None
        net = new.network_by_id(ing.id)
        if net is None:  # the watch has not mirrored it here yet
            net = network_from_record(ing, self.default_mtu())
            new.networks[net.name] = net
        pool = net.pool(4)
        assert pool is not None
        ep_id = new_id()
        used = {e.ifname for e in new.endpoints_in(ep.target)} | {ep.ifname}
        ifname = await free_ifname(req.target, used, has_link)

        def build(addr: IPAddress) -> Endpoint:
            v4 = ip_interface(f"{addr}/{pool.subnet.prefixlen}")
            return ep.model_copy(
                update={
                    "id": ep_id,
                    "network": ing.id,
                    "ifname": ifname,
                    "host_ifname": get_driver(net).endpoint_host_ifname(ep_id),
                    "mac": overlay_mac(addr),
                    "ipv4": v4 if isinstance(v4, IPv4Interface) else None,
                    "ipv6": None,
                    "aliases": [],
                    "gw_for": None,
                    "default_route": False,
                }
            )

        key = self.cluster.keys.endpoint(ing.id, ep_id)
        addr = await self.cluster.ipam.allocate_address(
            ing,
            ep_id,
            None,
            4,
            held=cache.allocations(ing.id),
            also=lambda a: [Put(key, encode(endpoint_record(build(a), self.node)))],
        )
        return build(addr)

    def _companions_leaving(self, ep: Endpoint) -> list[Endpoint]:
        """The ingress endpoint of ``ep``'s namespace when ``ep`` is its last endpoint of ``ep.service``."""
        state = self.svc.state
        if ep.service is None:
            return []
        ingress = {n.id for n in state.networks.values() if n.ingress}
        mine = [e for e in state.endpoints_in(ep.target) if e.service == ep.service and e.id != ep.id]
        if ep.network in ingress or any(e.network not in ingress for e in mine):
            return []
        return [e for e in mine if e.network in ingress]

    async def _forget(self, net_id: str, ep_id: str, addrs: list[IPAddress]) -> None:
        """Delete an endpoint's record and the address allocations it holds, in one transaction.  The
        endpoint is this node's and holds those addresses (taken create-if-absent), so nobody else's goes."""
        keys = self.cluster.keys
        await self.cluster.store.txn(
            f"forget endpoint {ep_id[:12]}",
            [],
            [Delete(keys.endpoint(net_id, ep_id)), *(Delete(keys.address(net_id, a)) for a in addrs)],
        )

    def _allocation(self, ep: Endpoint, addr: IPAddress) -> Allocation:
        return Allocation(network=ep.network, address=addr, endpoint=ep.id, node=self.node, created=now())

    async def disconnect(self, net: Network, ep: Endpoint, what: str) -> None:
        svc = self.svc
        key = self.cluster.keys.endpoint(net.id, ep.id)
        addrs = [i.ip for i in (ep.ipv4, ep.ipv6) if i is not None]
        # record and addresses in one transaction: the others drop its entries; refused while etcd is down
        await self._forget(net.id, ep.id, addrs)
        new = svc.state.copy_for_change()
        del new.endpoints[ep.id]
        gone = {ep.id}
        companions = self._companions_leaving(ep)
        for c in companions:  # its ingress endpoint goes with the namespace's last task of the service
            if c.ipv4 is not None:
                await self._forget(c.network, c.id, [c.ipv4.ip])
        others = [
            e
            for e in svc.state.endpoints_in(ep.target)
            if e.id != ep.id
            and e not in companions
            and (n := svc.state.network_by_id(e.network)) is not None
            and n.driver == "overlay"
            and not n.internal
        ]
        if not others:  # its way out goes with the last overlay endpoint of the namespace that used it
            gone |= {e.id for e in svc.state.endpoints_in(ep.target) if e.gw_for is not None}
        gone |= {c.id for c in companions}
        for ep_id in gone:
            new.endpoints.pop(ep_id, None)
        try:
            await svc._commit(new, Scope.of(networks=[net.id], endpoints=gone), what)
        except BaseException:
            with contextlib.suppress(ClusterUnavailableError):  # else the publisher puts them back
                await self.cluster.store.txn(
                    f"restore endpoint {ep.id[:12]}",
                    [],
                    [
                        Put(key, encode(endpoint_record(ep, self.node))),
                        *(
                            Put(self.cluster.keys.address(net.id, a), encode(self._allocation(ep, a)))
                            for a in addrs
                        ),
                    ],
                )
            raise
        log.info("overlay_endpoint_disconnected", network=net.name, target=ep.target)
