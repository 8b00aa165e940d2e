"""The kernel facade's links (part of ``netd.kernel.facade.Kernel``): reads of the daemon's namespace (its links
and addresses, the default route, prefixes), bridges, veths and their namespace side, macvlan/ipvlan parents,
shims and children, and link deletes.

Writes go through pyroute2.  The hot reads (observe, events, the lookup after a create) use a raw socket and
:mod:`netd.kernel.rtraw`, which decodes only the fields netd uses: pyroute2 decodes every attribute, and that
was most of a connect's observe time (see rtsock).  Links read either way are decoded by ``rtraw.decode_link``.
"""

from __future__ import annotations

import errno
import socket
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from functools import partial
from ipaddress import ip_address

from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError
from netd.core.linkspec import (
    BridgeSpec,
    ChildSpec,
    Iface,
    ObservedChild,
    ObservedHost,
    ObservedPeer,
    ParentSpec,
    ShimSpec,
    VethSpec,
)
from netd.core.model import IPAddress, IPNetwork
from netd.kernel import child as childops
from netd.kernel import link as linkops
from netd.kernel import netns as nsops
from netd.kernel import parent as parentops
from netd.kernel import peers as peerops
from netd.kernel import teardown
from netd.kernel import vxlan as vxlanops
from netd.kernel.facade_sockets import KernelSockets, open_socket
from netd.kernel.nlerror import kernel_error
from netd.kernel.observe import build_observed, prefixes_of
from netd.kernel.rtraw import (
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RawLink,
    decode_addr,
    decode_link,
    dump_request,
    get_link_request,
)
from netd.kernel.rtsock import DumpInterrupted, RouteSocket


async def _read_links(
    rs: RouteSocket, names: Collection[str] | None, addresses: bool = True
) -> tuple[list[RawLink], dict[int, list[Iface]]]:
    links: list[RawLink] = []
    if names is None:
        answer = await rs.ask(partial(dump_request, RTM_GETLINK), "link dump")
        links = [decode_link(data, m.start, m.end) for m, data in answer if m.type == RTM_NEWLINK]
    else:
        for name in sorted(set(names)):
            try:
                answer = await rs.ask(partial(get_link_request, ifname=name), f'link "{name}"')
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    continue
                raise
            links += [decode_link(data, m.start, m.end) for m, data in answer if m.type == RTM_NEWLINK]
    addrs: dict[int, list[Iface]] = defaultdict(list)
    if not addresses:
        return links, addrs
    # all addresses, or (strict checking) only those of the links found: the kernel walks just those
    for index in [0] if names is None else [link.index for link in links]:
        answer = await rs.ask(partial(dump_request, RTM_GETADDR, index=index), "address dump")
        for m, data in answer:
            found = decode_addr(data, m.start, m.end) if m.type == RTM_NEWADDR else None
            if found is not None and found[1] is not None:
                addrs[found[0]].append(found[1])
    return links, addrs


class KernelLinks(KernelSockets):
    """The link operations of ``Kernel`` (which sets these attributes up in its ``__init__``)."""

    _bridges: dict[str, int]  # bridge name -> ifindex, refreshed by ensure_bridge
    _kinds: set[str]  # link kinds this kernel was found to support (a missing one is asked again)

    async def observe(self, names: Collection[str] | None = None) -> ObservedHost:
        """Links of the daemon's netns (all of them, or only ``names``: O(1) for a scoped reconcile), with
        their addresses.  Read on a raw socket of its own (see kernel.rtsock)."""
        links, addrs = await self._raw_links(names)
        host = build_observed(links, addrs)
        if names is None:
            self._bridges = {link.ifname: link.index for link in host.bridges.values()}
        else:
            self._bridges.update({link.ifname: link.index for link in host.bridges.values()})
        return host

    async def _raw_links(
        self, names: Collection[str] | None, addresses: bool = True
    ) -> tuple[list[RawLink], dict[int, list[Iface]]]:
        for attempt in range(5):
            try:
                with RouteSocket() as rs:
                    return await _read_links(rs, names, addresses)
            except DumpInterrupted:  # the link table changed during the dump: take a new one
                if attempt == 4:
                    raise KernelError(
                        "host links: dump failed: interrupted 5 times; links keep changing"
                    ) from None
            except OSError as exc:
                raise kernel_error("host links", "dump", exc) from exc
        raise AssertionError("unreachable")

    async def default_route_address(self, version: int = 4) -> IPAddress | None:
        """The first global address of the interface the default route leaves through (the node's underlay
        address when ``[cluster] advertise_address`` is not set); None without a default route."""
        ipr = await open_socket()
        try:
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            routes = [m async for m in await ipr.route("dump", family=family)]
            oif = next(
                (r.get_attr("RTA_OIF") for r in routes if r["dst_len"] == 0 and r.get_attr("RTA_OIF")), None
            )
            if oif is None:
                return None
            for a in [m async for m in await ipr.addr("dump", family=family)]:
                if a["index"] == oif and a["scope"] == 0:
                    return ip_address(a.get_attr("IFA_ADDRESS"))
            return None
        except NetlinkError as exc:
            raise kernel_error("default route", "read", exc) from exc
        finally:
            ipr.close()

    async def underlay_mtu(self, address: IPAddress) -> int:
        """The MTU of the interface holding ``address``."""
        return await vxlanops.underlay_mtu(address)

    async def link_kind_supported(self, kind: str) -> bool:
        """Whether the kernel makes ``kind`` links (see child.kind_supported); a validation read at create."""
        if kind in self._kinds:
            return True
        ipr = await open_socket()  # its own socket: the reconciler's may be in a dump
        try:
            if await childops.kind_supported(ipr, kind):
                self._kinds.add(kind)
        finally:
            ipr.close()
        return kind in self._kinds

    async def host_prefixes(self) -> list[IPNetwork]:
        """Every prefix the daemon's netns routes or addresses (not default routes): subnets to stay clear of.
        A validation read beside a reconcile (network create only): a socket of its own for the call."""
        ipr = await open_socket()
        try:
            routes = [m async for m in await ipr.route("dump")]
            addrs = [m async for m in await ipr.addr("dump")]
        except NetlinkError as exc:
            raise kernel_error("host routes", "dump", exc) from exc
        finally:
            ipr.close()
        return prefixes_of(routes, addrs)

    async def ensure_bridge(self, spec: BridgeSpec) -> None:
        index = await linkops.ensure_bridge(await self._host_socket(), spec)
        self._bridges[spec.ifname] = index

    async def remove_addresses(self, ifname: str, addresses: Sequence[Iface]) -> list[Iface]:
        """Delete exactly these addresses from a link of the daemon's namespace (those it still has)."""
        return await linkops.remove_addresses(await self._host_socket(), ifname, addresses)

    async def _bridge_index(self, name: str) -> int:
        index = self._bridges.get(name)
        if index is not None:
            return index
        msg = await linkops.get_link(await self._host_socket(), name)
        if msg is None:
            raise KernelError(f'bridge "{name}": not found; create the network\'s bridge first')
        self._bridges[name] = int(msg["index"])
        return self._bridges[name]

    async def ensure_veth(
        self, spec: VethSpec, *, seen_missing: bool = False, reconfigure: bool = False, announce: bool = True
    ) -> None:
        """``seen_missing``: an observe of this reconcile found no link of the name (see link.ensure_veth).
        ``announce``: a veth created here announces the addresses its spec names (``VethSpec.announce``: those a
        peer may hold with another MAC; full passes recreate known endpoints and announce nothing)."""
        ipr = await self._host_socket()
        bridge = await self._bridge_index(spec.bridge)
        flags = {"seen_missing": seen_missing, "reconfigure": reconfigure, "announce": announce}
        try:
            await linkops.ensure_veth(ipr, self.ns_socket, spec, bridge, **flags)
        except KernelError:
            # the bridge was recreated behind our back (stale cached ifindex): refresh and retry once
            self._bridges.pop(spec.bridge, None)
            if await self._bridge_index(spec.bridge) == bridge:
                raise
            bridge = await self._bridge_index(spec.bridge)
            await linkops.ensure_veth(ipr, self.ns_socket, spec, bridge, **flags)

    async def repair_peer(self, spec: VethSpec) -> None:
        """The namespace side of an existing veth drifted (addresses, routes, state, MAC, MTU): set it again."""
        await peerops.repair_peer(await self.ns_socket(spec.netns.path), spec)

    async def peer_exists(self, spec: VethSpec) -> bool:
        try:
            nsipr = await self.ns_socket(spec.netns.path)
            return await linkops.peer_ok(nsipr, spec)
        except KernelError:
            return False
        except NetlinkError as exc:
            self._drop(spec.netns.path)
            raise kernel_error(f'peer "{spec.peer_ifname}" in {spec.netns.path}', "check", exc) from exc

    async def delete_links(self, ifnames: Sequence[str]) -> None:
        names = list(dict.fromkeys(ifnames))
        try:
            if len(names) > 1:  # which exist: one raw dump (see rtsock); marks and delete raw (see teardown)
                links, _ = await self._raw_links(None, addresses=False)
                wanted = set(names)
                await teardown.delete_links({link.index: link.ifname for link in links if link.ifname in wanted})
            else:
                await teardown.delete_named(await self._host_socket(), names)
        except NetlinkError as exc:
            raise kernel_error(
                f"links {', '.join(names[:5])}{'...' if len(names) > 5 else ''}", "delete", exc
            ) from exc
        for name in names:
            self._bridges.pop(name, None)

    # ------------------------------------------------------------------------------------------ macvlan/ipvlan

    async def ensure_parent(self, spec: ParentSpec) -> None:
        await parentops.ensure_parent(await self._host_socket(), spec)

    async def ensure_shim(self, spec: ShimSpec) -> None:
        await parentops.ensure_shim(await self._host_socket(), spec)

    async def ensure_child(self, spec: ChildSpec) -> None:
        await childops.ensure_child(await self._host_socket(), self.ns_socket, spec)

    async def observe_children(self, paths: Collection[str]) -> dict[str, ObservedChild]:
        """Owned children by endpoint id in the live namespaces among ``paths``."""
        out: dict[str, ObservedChild] = {}
        for path in sorted(paths):
            if not nsops.ns_alive(path):
                continue
            try:
                found = await childops.observe_children(self.ns_socket, path)
            except NetlinkError as exc:
                self._drop(path)
                raise kernel_error(f"netns {path}", "dump links", exc) from exc
            out.update({c.link.owner: c for c in found if c.link.owner is not None})
        return out

    async def observe_peers(self, peers: Mapping[str, tuple[str, str]]) -> dict[str, ObservedPeer]:
        """Endpoints' interfaces inside their namespaces, by endpoint id, from ``{id: (netns path, ifname)}``;
        a namespace that is gone (or has no such interface) gives no entry (the endpoint's own check says so).
        One short-lived thread walks them all (it setns()es; never the loop's or a pooled thread)."""
        if not peers:
            return {}
        items = dict(peers)
        try:
            return await nsops.in_fresh_thread(lambda: peerops.read_peers(items), name="netd-peers")
        except OSError as exc:
            raise kernel_error("endpoint namespaces", "read", exc) from exc

    async def delete_children(self, children: Sequence[tuple[str, str]]) -> None:
        await childops.delete_children(self.ns_socket, children)
