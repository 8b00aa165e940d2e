"""A connect's new endpoint, validated completely before anything is written: the target namespace checked, the
interface name, the MAC, the addresses (IPAM) and the published ports (``netd.engine.publish``).

A mixin of ``netd.engine.service.Service``, called with the service lock held; it changes nothing but the
address book's scan starts.  ``netd.multihost.overlay`` uses ``resolve_target`` and ``_build_endpoint`` too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from ipaddress import IPv4Interface, IPv6Interface, ip_interface
from typing import NamedTuple

from netd.core import ipam, predefined
from netd.core.errors import ConflictError, InvalidError
from netd.core.links import check_links
from netd.core.model import Endpoint, Network
from netd.core.naming import new_id
from netd.core.request import Connect, Target
from netd.drivers import get_driver
from netd.engine.commit import ServiceCore
from netd.engine.networks import now
from netd.engine.nsident import check_netns_path, free_ifname, spelling
from netd.engine.publish import plan_published


class ResolvedTarget(NamedTuple):
    """A connect's namespace, checked: its inode (NetnsPath only), its endpoints, a lookup of its links."""

    inode: int | None
    existing: list[Endpoint]
    has_link: Callable[[str], Awaitable[bool]] | None


class EndpointBuilder(ServiceCore):
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
        existing = self.namespaces.endpoints_in(self.index, target, found)
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
            ep.ifname == ifname for ep in self.index.endpoints("container", req.container_id)
        ):
            raise ConflictError(
                f"container {req.container_id[:12]} already has {ifname} from netd; delete it first (CNI DEL)",
                field="ContainerID",
            )
        mac = req.mac
        if mac is not None and any(ep.mac == mac for ep in self.index.of_network(net.id)):
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
        port_list = (
            plan_published(self.index, net, req.ports, frozenset(addrs), self.port_holders, self.settings)
            if req.ports
            else []
        )
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
