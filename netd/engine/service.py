"""What the API calls: validate -> update the desired state -> persist -> reconcile.

Every change is validated completely before anything is written.  The new state is saved, then the reconciler
applies it; if applying fails for the objects the request touched, the previous state is restored and
reconciled again, which removes whatever was half-built (the reconciler deletes owned objects that are no longer
desired).  So a failed request changes nothing, in the state file or in the kernel.

Lock order: the service lock, then the reconciler lock (``applier.apply``), never the reverse.  The reconciler
calls ``prune_endpoints`` only while it does not hold its own lock; nothing here calls ``applier.reconcile``
(a full pass, which prunes) while holding ``self.lock``.

``Service`` is assembled from parts, each its own module: the commit and the lookups (``netd.engine.commit``,
the one writer of the desired state), the netns operations (``netd.engine.netnsops``) and a connect's new
endpoint (``netd.engine.endpointbuild``, with its published ports in ``netd.engine.publish``).  The network,
default-bridge and endpoint operations are here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import structlog

from netd.core import defaultbridge, ipam, predefined
from netd.core.actions import Scope
from netd.core.errors import ConflictError, InvalidError, NotFoundError, StorageError
from netd.core.gateway import assign_default_routes
from netd.core.model import Endpoint, Network
from netd.core.request import Target, parse_connect, parse_container_disconnect, parse_disconnect
from netd.drivers import CLUSTER_DRIVERS, parse_network_create
from netd.engine.commit import Applier, OverlayOps
from netd.engine.endpointbuild import EndpointBuilder, ResolvedTarget
from netd.engine.netnsops import NetnsOps

__all__ = ["Applier", "OverlayOps", "ResolvedTarget", "Service"]

log = structlog.get_logger()


class Service(NetnsOps, EndpointBuilder):
    # -- networks ----------------------------------------------------------------------------------------------

    async def prune_networks(self) -> list[str]:
        """``network prune``: remove every user-defined network without endpoints; their names."""
        async with self.lock:
            used = {ep.network for ep in self.state.endpoints.values()}
            gone = [n for n in self.state.networks.values() if not n.is_default and n.id not in used]
            if not gone:
                return []
            new = self.state.copy_for_change()
            for net in gone:
                del new.networks[net.name]
            await self._commit(new, Scope.of(networks=[n.id for n in gone]), "network prune")
            log.info("networks_pruned", networks=sorted(n.name for n in gone))
            return sorted(n.name for n in gone)

    async def create_network(self, body: Any) -> Network:
        req, opts = parse_network_create(body)
        predefined.refuse_create(req.name)
        if req.driver in CLUSTER_DRIVERS:
            async with self.lock:
                return await self._overlay().create_network(req, opts)
        async with self.lock:
            net = await self.networks.build(req, opts, self.state)
            if req.labels:
                net = net.model_copy(update={"labels": req.labels})
            new = self.state.copy_for_change()
            new.networks[net.name] = net
            await self._commit(new, Scope.of(networks=[net.id]), f"network create {net.name}")
            log.info(
                "network_created", network=net.name, bridge=net.bridge, subnets=[str(c.subnet) for c in net.ipam]
            )
            return net

    async def remove_network(self, name: str, force: bool = False) -> None:
        """``force``: disconnect its endpoints first, all in one change (their veths are deleted together in the
        kernel, one group delete, not one RCU wait each)."""
        if (pre := predefined.predefined_by_ref(name)) is not None:
            predefined.refuse_remove(pre)
        async with self.lock:
            net = self.get_network(name)
            if net.is_default:
                raise ConflictError(
                    f"network {net.name!r} is the default bridge; disable it in the config instead"
                )
            if net.driver in CLUSTER_DRIVERS:
                await self._overlay().remove_network(net)
                return
            eps = self.state.endpoints_of(net.id)
            if eps and not force:
                names = ", ".join(sorted({ep.netns or ep.netns_path or "?" for ep in eps}))
                raise ConflictError(
                    f"network {net.name!r} has active endpoints ({names}); disconnect them first, or remove it "
                    "with --force (?force=1) to disconnect them too",
                    field="name",
                )
            new = self.state.copy_for_change()
            gone = {ep.id for ep in eps}
            for ep_id in gone:
                del new.endpoints[ep_id]
            del new.networks[net.name]
            await self._commit(new, Scope.of(networks=[net.id], endpoints=gone), f"network rm {net.name}")
            log.info("network_removed", network=net.name, endpoints=len(gone))

    # -- default bridge ----------------------------------------------------------------------------------------

    async def ensure_default_network(self) -> None:
        """Create or update the docker0-style default network from ``[default_bridge]``."""
        cfg = self.settings.default_bridge
        async with self.lock:
            current = next((n for n in self.state.networks.values() if n.is_default), None)
            if not cfg.enabled:
                if current is not None and not self.state.endpoints_of(current.id):
                    new = self.state.copy_for_change()
                    del new.networks[current.name]
                    await self._commit(new, Scope.of(networks=[current.id]), "default bridge disabled")
                return
            net = await self.networks.default_network(current, self.state)
            if current is not None and current == net:
                return
            self.pending = []
            eps = self.state.endpoints_of(current.id) if current is not None else []
            if current is not None and eps and current.ipam != net.ipam:
                held = self.addresses.taken(self.state, net.id)
                net, eps, waiting = defaultbridge.live_change(current, net, eps, held)
                self.pending = [waiting] if waiting else []
                log.info("default_bridge_live_change", endpoints=len(eps), pending=waiting)
                if current == net:
                    return
            taken = {n.name: [c.subnet for c in n.ipam] for n in self.state.networks.values() if not n.is_default}
            for p in net.ipam:
                hit = ipam.overlapping(p.subnet, taken)
                if hit is not None:
                    raise ConflictError(
                        f"default_bridge: subnet {p.subnet} overlaps network {hit[0]!r} ({hit[1]})", field="bip"
                    )
            new = self.state.copy_for_change()
            if current is not None:
                del new.networks[current.name]
            new.networks[net.name] = net
            for ep in eps:
                new.endpoints[ep.id] = ep
            ids = frozenset(ep.id for ep in eps)
            # the endpoints' namespace side is re-applied: new IPv6 addresses, MTU, gateways
            scope = replace(Scope.of(networks=[net.id], endpoints=ids), refresh=ids)
            await self._commit(new, scope, "default bridge")

    # -- endpoints ---------------------------------------------------------------------------------------------

    async def connect(self, network: str, body: Any) -> Endpoint:
        if (pre := predefined.predefined_by_ref(network)) is not None:
            predefined.refuse_connect(pre)
        req = parse_connect(body)
        async with self.lock:
            net = self.get_network(network)
            if net.driver in CLUSTER_DRIVERS:
                return await self._overlay().connect(net, req)
            if req.service is not None:
                raise InvalidError(
                    f"--service: network {net.name!r} is a {net.driver} network; service tasks join overlay "
                    "networks only",
                    field="service",
                )
            ep = await self._build_endpoint(net, req)
            among = [*self.namespaces.members(self.index, ep), ep.id]  # the namespace's, from the index
            new = self.state.copy_for_change()
            new.endpoints[ep.id] = ep
            if req.mac is not None and net.custom_macs is False:  # from now on every new endpoint announces its
                new.networks[net.name] = net.model_copy(update={"custom_macs": True})  # IPv4 (drivers.bridge)
            # a higher --gw-priority takes the default route over
            key = self.namespaces.key
            handed = assign_default_routes(new, {key(ep)}, key, among) - {ep.id}
            ep = new.endpoints[ep.id]
            scope = Scope.of(endpoints=[ep.id], peers=handed)
            await self._commit(new, scope, f"connect {req.target.describe()} to {net.name}")
            log.info("endpoint_connected", network=net.name, target=ep.target, ip=str(ep.ipv4), ifname=ep.ifname)
            return ep

    async def disconnect(self, network: str, body: Any) -> None:
        container: tuple[str, str | None] | None = None
        target: Target | None = None
        if isinstance(body, dict) and "ContainerID" in body:
            container = parse_container_disconnect(body)
        else:
            target = parse_disconnect(body)
        container_id = container[0] if container is not None else None
        async with self.lock:
            net = self.get_network(network)
            if container is not None:
                ep = self._find_container(net, *container)
            else:
                assert target is not None
                ep = self._find_endpoint(net, target)
            if net.driver in CLUSTER_DRIVERS:
                await self._overlay().disconnect(net, ep, f"disconnect {ep.target} from {net.name}")
                return
            among = self.namespaces.members(self.index, ep)
            new = self.state.copy_for_change()
            del new.endpoints[ep.id]
            # the next network's gateway takes the default route over
            key = self.namespaces.key
            handed = assign_default_routes(new, {key(ep)}, key, among)
            scope = Scope.of(endpoints=[ep.id], peers=handed)
            await self._commit(new, scope, f"disconnect {ep.target} from {net.name}")
            log.info("endpoint_disconnected", network=net.name, target=ep.target, container=container_id)

    def _find_container(self, net: Network, container_id: str, ifname: str | None) -> Endpoint:
        """The endpoint a CNI runtime attached (``ContainerID`` and, when given, ``Interface``)."""
        for ep in self.index.endpoints("container", container_id):
            if ep.network == net.id and (not ifname or ep.ifname == ifname):
                return ep
        raise NotFoundError(f"container {container_id[:12]} has no endpoint on network {net.name!r}")

    def _find_endpoint(self, net: Network, target: Target) -> Endpoint:
        for ep in self.index.in_target(target.key()):
            if ep.network == net.id:
                return ep
        raise NotFoundError(f"{target.describe()} is not connected to network {net.name!r}")

    async def prune_endpoints(self, ids: set[str], why: str) -> None:
        """Drop endpoints whose foreign namespace has gone (the container exited or the host rebooted).

        Called by the reconciler's full pass before it takes its lock; that pass then removes what is left."""
        async with self.lock:
            gone = ids & set(self.state.endpoints)
            if not gone:
                return
            new = self.state.copy_for_change()
            for ep_id in gone:
                ep = new.endpoints.pop(ep_id)
                log.info("endpoint_pruned", endpoint=ep_id[:12], netns_path=ep.netns_path, reason=why)
            # the pass that follows (a full one) repairs the namespace side
            handed = assign_default_routes(new, ns_of=self.namespaces.key)
            try:  # the scope names every endpoint that changed (the journal records those)
                self._adopt(new, Scope.of(endpoints=gone, peers=handed - gone))
            except StorageError as e:  # kept until a later pass can store their removal; the pass goes on
                log.error("endpoint_prune_not_stored", endpoints=len(gone), error=e.message)
                return
            await self.notify_change()  # their names leave DNS
