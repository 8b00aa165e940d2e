"""What the API calls: validate -> update the desired state -> persist -> reconcile.

Every change is validated completely before anything is written.  The new state is saved, then the reconciler
applies it; if applying fails for the objects the request touched, the previous state is restored and
reconciled again, which removes whatever was half-built (the reconciler deletes owned objects that are no longer
desired).  So a failed request changes nothing, in the state file or in the kernel.

Lock order: the service lock, then the reconciler lock (``applier.apply``), never the reverse.  The reconciler
calls ``prune_endpoints`` only while it does not hold its own lock; nothing here calls ``applier.reconcile``
(a full pass, which prunes) while holding ``self.lock``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from ipaddress import IPv4Interface, IPv6Interface, ip_interface
from typing import Any, NamedTuple, Protocol

import structlog

from netd.core import defaultbridge, ipam, ports, predefined
from netd.core.actions import Scope
from netd.core.config import Settings
from netd.core.errors import ConflictError, InvalidError, KernelError, NotFoundError, StorageError
from netd.core.gateway import assign_default_routes
from netd.core.links import check_links
from netd.core.model import DesiredState, Endpoint, Netns, Network, PortMapping
from netd.core.naming import new_id
from netd.core.request import (
    Connect,
    NetworkCreate,
    Target,
    parse_connect,
    parse_container_disconnect,
    parse_disconnect,
    parse_netns_create,
    parse_netns_network,
)
from netd.drivers import CLUSTER_DRIVERS, DriverOptions, get_driver, parse_network_create
from netd.drivers.overlay import NO_CLUSTER
from netd.engine.locks import TimedLock
from netd.engine.networks import KernelReader, NetworkBuilder, now
from netd.engine.nsident import NamespaceIndex, check_netns_path, free_ifname, spelling
from netd.engine.plan import scope_links, scope_targets
from netd.engine.state import StateStore

log = structlog.get_logger()


class ResolvedTarget(NamedTuple):
    """A connect's namespace, checked: its inode (NetnsPath only), its endpoints, a lookup of its links."""

    inode: int | None
    existing: list[Endpoint]
    has_link: Callable[[str], Awaitable[bool]] | None


class Applier(Protocol):
    """The part of the reconciler the service needs (kept narrow so unit tests can fake it)."""

    async def apply(self, scope: Scope, reason: str) -> dict[str, str]: ...
    async def reconcile(self, reason: str) -> dict[str, str]: ...


class OverlayOps(Protocol):
    """Changes of networks that live in the cluster store (cluster mode only: ``netd.multihost``).  Called with
    the service lock held."""

    async def create_network(self, req: NetworkCreate, opts: DriverOptions) -> Network: ...
    async def remove_network(self, net: Network) -> None: ...
    async def connect(self, net: Network, req: Connect) -> Endpoint: ...
    async def disconnect(self, net: Network, ep: Endpoint, what: str) -> None: ...


class Service:
    def __init__(
        self, settings: Settings, store: StateStore, state: DesiredState, applier: Applier, kernel: KernelReader
    ) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self.applier = applier
        self.kernel = kernel
        self.networks = NetworkBuilder(settings, kernel)
        self.lock = TimedLock()  # taken before the reconciler's, never after (see the module docstring)
        # called with the new state after each successful commit (the daemon syncs the DNS listeners and the
        # netns resolv.conf files); its failures are logged, never undo the change
        # the second argument names the only namespaces whose endpoints changed (None: anything may have)
        self.on_change: Callable[[DesiredState, frozenset[str] | None], Awaitable[None]] | None = None
        # config changes a reload could not apply (they need endpoints gone): shown in status as degraded
        self.pending: list[str] = []
        self.addresses = ipam.AddressBook()  # held addresses and scan starts, per network (see _adopt)
        # namespace identity by inode (looked up on the applier when used: narrow fakes need not have it)
        self.namespaces = NamespaceIndex(lambda p: self.kernel.ns_probe(p), lambda n: self.kernel.netns_path(n))
        self.overlay: OverlayOps | None = None  # cluster mode: overlay networks (netd.multihost)
        self.port_holders: Callable[[], list[ports.Holder]] | None = None  # cluster mode: services' ports

    # -- commit ------------------------------------------------------------------------------------------------

    async def _commit(self, new: DesiredState, scope: Scope, what: str) -> None:
        """Persist and apply ``new``; on failure for the touched objects, go back to the old state."""
        old = self.state
        # look at the links of both versions: the old one's are what a removal deletes, the new one's are
        # what a rollback deletes
        scope = replace(
            scope,
            links=scope.links | scope_links(old, scope) | scope_links(new, scope),
            targets=scope.targets | scope_targets(old, scope) | scope_targets(new, scope),
        )
        self._adopt(new, scope)
        errors = await self.applier.apply(scope, reason=what)
        touched = _scope_ids(scope)
        failed = {k: v for k, v in errors.items() if k in touched}
        if not failed:
            await self.notify_change(_touched_netns(old, new, scope))
            return
        log.warning("change_rolled_back", change=what, errors=failed)
        try:
            self._adopt(old, scope)
        except StorageError as e:  # the client is told it failed: memory and kernel go back all the same; the
            # store still holds ``new`` as saved, so its next successful save writes the difference back
            log.error("rollback_not_stored", change=what, error=e.message)
            self._adopt(old, scope, persist=False)
        await self.applier.apply(scope, reason=f"rollback {what}")
        raise KernelError(f"{what} failed and was rolled back: " + "; ".join(failed.values()))

    async def notify_change(self, netns: frozenset[str] | None = None) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(self.state, netns)
        except Exception as e:  # DNS/resolv.conf trouble must not fail (or undo) a committed change
            log.error("change_hook_failed", error=str(e), kind=type(e).__name__)

    async def reconcile_all(self) -> dict[str, str]:
        return await self.applier.reconcile("api")  # not under self.lock: a full pass may prune

    # -- networks ----------------------------------------------------------------------------------------------

    def _overlay(self) -> OverlayOps:
        if self.overlay is None:
            raise InvalidError(NO_CLUSTER, field="Driver")
        return self.overlay

    def get_network(self, name: str) -> Network:
        """By name, by id, or by any unique prefix of an id (Docker's order)."""
        net = self.state.networks.get(name)
        if net is not None:
            return net
        by_id = [n for n in self.state.networks.values() if n.id.startswith(name)] if name else []
        if len(by_id) == 1:
            return by_id[0]
        if len(by_id) > 1:
            raise NotFoundError(
                f"network id prefix {name!r} is ambiguous ({', '.join(sorted(n.name for n in by_id))}); "
                "give more characters or the name",
                field="name",
            )
        raise NotFoundError(f"network {name!r} not found; see netd-ctl network ls")

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

    # -- netns -------------------------------------------------------------------------------------------------

    async def create_netns(self, body: Any) -> Netns:
        name = parse_netns_create(body)
        mode = parse_netns_network(body)
        async with self.lock:
            if name in self.state.netns:
                raise ConflictError(f"netns {name!r} already exists", field="name")
            foreign = self.kernel.netns_foreign(name)
            if foreign is not None:
                raise ConflictError(
                    f"netns {name!r}: {foreign} already exists and was not made by netd; netd does not adopt "
                    f"it: remove it (ip netns del {name}) or choose another name",
                    field="Name",
                )
            ns = Netns(
                name=name, network="none" if mode == "none" else "host" if mode == "host" else None, created=now()
            )
            new = self.state.copy_for_change()
            new.netns[name] = ns
            await self._commit(new, Scope.of(netns=[name]), f"netns create {name}")
            log.info("netns_created", netns=name)
            return ns

    def get_netns(self, name: str) -> Netns:
        ns = self.state.netns.get(name)
        if ns is None:
            raise NotFoundError(f"netns {name!r} not found; create it with: netd-ctl netns create {name}")
        return ns

    async def remove_netns(self, name: str) -> None:
        """Remove a netns and its endpoints (like removing a container)."""
        await self.remove_netns_many([name], strict=True)

    async def remove_netns_many(self, names: Sequence[str], strict: bool = False) -> dict[str, str]:
        """Remove these netns and their endpoints in one change: their veths go in one group delete.  Returns
        the names not found, with the error (``strict``: raise it instead, for a single name)."""
        async with self.lock:
            missing: dict[str, str] = {}
            found: list[str] = []
            for name in dict.fromkeys(names):
                try:
                    found.append(self.get_netns(name).name)
                except NotFoundError as e:
                    if strict:
                        raise
                    missing[name] = e.message
            if not found:
                return missing
            new = self.state.copy_for_change()
            gone: set[str] = set()
            for name in found:
                del new.netns[name]
                self.namespaces.forget(name)
                gone |= {ep.id for ep in new.endpoints_in(f"netns:{name}")}
            # overlay networks lose their links here with their last endpoint: in the scope too
            nets = {new.endpoints[i].network for i in gone if _is_cluster(new, new.endpoints[i].network)}
            for ep_id in gone:
                del new.endpoints[ep_id]
            what = f"netns rm {found[0]}" if len(found) == 1 else f"netns rm {found[0]} and {len(found) - 1} more"
            await self._commit(new, Scope.of(endpoints=gone, netns=found, networks=nets), what)
            for name in found:
                log.info("netns_removed", netns=name)
            log.debug("netns_removed_batch", netns=len(found), endpoints=len(gone))
            return missing

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
            new = self.state.copy_for_change()
            new.endpoints[ep.id] = ep
            # a higher --gw-priority takes the default route over
            handed = assign_default_routes(new, {self.namespaces.key(ep)}, self.namespaces.key) - {ep.id}
            ep = new.endpoints[ep.id]
            scope = Scope.of(endpoints=[ep.id], peers=handed)
            await self._commit(new, scope, f"connect {req.target.describe()} to {net.name}")
            log.info("endpoint_connected", network=net.name, target=ep.target, ip=str(ep.ipv4), ifname=ep.ifname)
            return ep

    def resolve_target(self, net: Network, target: Target) -> ResolvedTarget:
        """Where a connect goes: the namespace checked (kind, not netd's own, not host/none), and the endpoints
        it already has, whichever spelling (name or path) connected them; refused if ``net`` is among them."""
        inode: int | None = None
        if target.netns is not None:
            if (mode := self.get_netns(target.netns).network) is not None:
                predefined.refuse_connect(mode, target.netns)
            path = self.kernel.netns_path(target.netns)
            found = self.kernel.ns_probe(path)
        else:
            assert target.netns_path is not None
            path = target.netns_path
            found = self.kernel.ns_probe(path)
            check_netns_path(path, found)
            assert found.ident is not None
            inode = found.ident[1]
        existing = self.namespaces.endpoints_in(self.state, target, found)
        for ep in existing:
            if ep.network == net.id:
                as_ = "" if ep.target == target.key() else f" (as {spelling(ep)})"
                raise ConflictError(f"{target.describe()} is already connected to network {net.name!r}{as_}")
        has_link = None if found.ident is None else partial(self.kernel.ns_has_link, path)
        return ResolvedTarget(inode, existing, has_link)

    async def _build_endpoint(self, net: Network, req: Connect) -> Endpoint:
        target = req.target
        inode, existing, has_link = self.resolve_target(net, target)
        drv = get_driver(net)
        drv.check_connect(net, self.state)
        if req.links:
            check_links(self.state, net, req.links, target.netns)
        if req.aliases and not (drv.features(net).dns or drv.features(net).ns_resolver):
            raise InvalidError(
                f"network {net.name!r} has no name service, so --alias has no effect there (as in Docker, aliases "
                "are for user-defined networks): connect without --alias, or to a user-defined bridge network",
                field="alias",
            )
        used_ifnames = {ep.ifname for ep in existing}
        if req.ifname is None:
            ifname = await free_ifname(target, used_ifnames, has_link)
        elif req.ifname in used_ifnames or (has_link is not None and await has_link(req.ifname)):
            raise ConflictError(
                f"{target.describe()} already has an interface {req.ifname}; choose another name",
                field="Interface",
            )
        else:
            ifname = req.ifname
        if req.container_id is not None and any(
            ep.container_id == req.container_id and ep.ifname == ifname for ep in self.state.endpoints.values()
        ):
            raise ConflictError(
                f"container {req.container_id[:12]} already has {ifname} from netd; delete it first (CNI DEL)",
                field="ContainerID",
            )
        mac = req.mac
        if mac is not None and any(ep.mac == mac for ep in self.state.endpoints_of(net.id)):
            raise ConflictError(f"MAC address {mac} is already used on network {net.name!r}", field="mac")
        ep_id = new_id()
        addrs: dict[int, IPv4Interface | IPv6Interface] = {}
        for version, requested in ((4, req.ipv4), (6, req.ipv6)):
            pool = net.pool(version)
            if pool is None:
                if requested is not None:
                    raise InvalidError(
                        f"network {net.name!r} has no IPv{version} subnet for {requested}",
                        field="ip" if version == 4 else "ip6",
                    )
                continue
            taken = self.addresses.taken(self.state, net.id)
            start = self.addresses.start(net.id, version)
            addr = ipam.allocate(pool, taken, requested, network=net.name, start=start)
            if requested is None:
                self.addresses.picked(net.id, pool, addr)
            addrs[version] = ip_interface(f"{addr}/{pool.subnet.prefixlen}")
        v4 = addrs.get(4)
        v6 = addrs.get(6)
        port_list = self._plan_ports(net, req, frozenset(addrs)) if req.ports else []
        return Endpoint(
            id=ep_id,
            network=net.id,
            netns=target.netns,
            netns_path=target.netns_path,
            netns_inode=inode,
            ifname=ifname,
            host_ifname=drv.endpoint_host_ifname(ep_id),
            mac=mac or drv.endpoint_mac(net, ep_id, v4.ip if isinstance(v4, IPv4Interface) else None),
            ipv4=v4 if isinstance(v4, IPv4Interface) else None,
            ipv6=v6 if isinstance(v6, IPv6Interface) else None,
            aliases=req.aliases,
            links=req.links,
            default_route=False,  # netd.core.gateway decides, with the namespace's other endpoints
            gw_priority=req.gw_priority,
            ports=port_list,
            container_id=req.container_id,
            created=now(),
        )

    def _plan_ports(self, net: Network, req: Connect, families: frozenset[int]) -> list[PortMapping]:
        """Published ports of a new endpoint: checked against every other endpoint's, host port 0 picked."""
        if not get_driver(net).features(net).published_ports or net.internal:
            why = "is internal (no traffic reaches it from outside the host, as in Docker)"
            if not get_driver(net).features(net).published_ports:
                why = f"is a {net.driver} network (its endpoints are reachable at their own addresses)"
            raise InvalidError(
                f"network {net.name!r} {why}: it cannot publish ports; connect without -p, or publish on a "
                "non-internal bridge network",
                field="publish",
            )
        ports.check_families(req.ports, families, net.name)
        holders: list[ports.Holder] = []
        can_clash = ports.clash_filter(req.ports)  # only those: 1000 published ports cost 9% of a connect
        for ep in self.state.endpoints.values():
            if not ep.ports or not any(can_clash(m) for m in ep.ports):
                continue
            other = self.state.network_by_id(ep.network)
            if other is None:
                continue
            fams = frozenset(a.version for a in (ep.ipv4, ep.ipv6) if a is not None)
            who = f"{'netns ' + repr(ep.netns) if ep.netns else ep.netns_path} on network {other.name!r}"
            holders.extend(ports.Holder(m, fams, who) for m in ep.ports if can_clash(m))
        if self.port_holders is not None:  # cluster mode: services' published ports (every node answers them)
            holders.extend(self.port_holders())
        return ports.plan_ports(req.ports, families, holders, self.settings.port_range)

    def _adopt(self, new: DesiredState, scope: Scope, persist: bool = True) -> None:
        """Persist ``new`` and make it current: the one way the desired state changes after start-up (so the
        address book sees every change of the endpoints).  A save that fails (StorageError) changes nothing."""
        before = self.state
        if persist:
            self.store.save(new)
        self.state = new
        self.addresses.changed(before, new, scope.endpoints)

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
            new = self.state.copy_for_change()
            del new.endpoints[ep.id]
            # the next network's gateway takes the default route over
            handed = assign_default_routes(new, {self.namespaces.key(ep)}, self.namespaces.key)
            scope = Scope.of(endpoints=[ep.id], peers=handed)
            await self._commit(new, scope, f"disconnect {ep.target} from {net.name}")
            log.info("endpoint_disconnected", network=net.name, target=ep.target, container=container_id)

    def _find_container(self, net: Network, container_id: str, ifname: str | None) -> Endpoint:
        """The endpoint a CNI runtime attached (``ContainerID`` and, when given, ``Interface``)."""
        for ep in self.state.endpoints_of(net.id):
            if ep.container_id == container_id and (not ifname or ep.ifname == ifname):
                return ep
        raise NotFoundError(f"container {container_id[:12]} has no endpoint on network {net.name!r}")

    def _find_endpoint(self, net: Network, target: Target) -> Endpoint:
        for ep in self.state.endpoints_of(net.id):
            if ep.target == target.key():
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
            assign_default_routes(new, ns_of=self.namespaces.key)
            try:
                self._adopt(new, Scope.of(endpoints=gone))
            except StorageError as e:  # kept until a later pass can store their removal; the pass goes on
                log.error("endpoint_prune_not_stored", endpoints=len(gone), error=e.message)
                return
            await self.notify_change()  # their names leave DNS


def _is_cluster(state: DesiredState, net_id: str) -> bool:
    net = state.network_by_id(net_id)
    return net is not None and net.driver in CLUSTER_DRIVERS


def _touched_netns(old: DesiredState, new: DesiredState, scope: Scope) -> frozenset[str] | None:
    """The netns whose endpoints a scoped change touched; None when networks changed (any namespace may)."""
    if scope.networks is None or scope.networks or scope.endpoints is None or scope.netns is None:
        return None
    names = set(scope.netns)
    for ep_id in scope.endpoints:
        for state in (old, new):
            ep = state.endpoints.get(ep_id)
            if ep is not None and ep.netns is not None:
                names.add(ep.netns)
    return frozenset(names)


def _scope_ids(scope: Scope) -> set[str]:
    out: set[str] = set()
    for part in (scope.networks, scope.endpoints, scope.netns):
        if part is not None:
            out |= part
    return out
