"""The kernel facade (``Kernel``): the one typed interface the engine uses for links, addresses, routes, netns
(and netd's ownership markers), sysctls, conntrack, VXLAN entries and link events.  One AsyncIPRoute per
network namespace, cached for one reconcile only.

Sockets into other namespaces are made fork-free: a fresh thread ``setns()``es, creates a NETLINK_ROUTE datagram
socket and hands the fd to ``AsyncIPRoute(fileno=...)`` in the event loop's thread (about 1 ms, against 25-40 ms
for pyroute2's fork-based ``netns=``).  An open socket keeps its namespace alive: a container runtime's namespace
whose last process exited, or a named mount removed by hand, would stay (with its veth on the bridge and its
address taken) for as long as netd held a socket in it.  So the reconciler releases them all at the end of each
pass (``release_netns_sockets``), and a validation read outside a pass uses a socket of its own for the call.
Then the namespace really goes, the kernel deletes the host side of its veth, and that event (about an owned
link) starts the pass that forgets the endpoint.  Each use of a cached socket also checks that the path still
names the same nsfs inode; a removed or replaced namespace evicts the entry.

Writes go through pyroute2.  The hot reads (observe, events, the lookup after a create) use a raw socket and
:mod:`netd.kernel.rtraw`, which decodes only the fields netd uses: pyroute2 decodes every attribute, and that
was most of a connect's observe time (see rtsock).  Links read either way are decoded by ``rtraw.decode_link``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections import OrderedDict, defaultdict
from collections.abc import AsyncGenerator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import structlog
from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError
from netd.core.ipsecspec import DesiredXfrm
from netd.core.linkspec import (
    BridgeSpec,
    ChildSpec,
    Iface,
    NsProbe,
    NsRef,
    ObservedChild,
    ObservedHost,
    ObservedPeer,
    ParentSpec,
    ShimSpec,
    VethSpec,
)
from netd.core.model import IPAddress, IPNetwork
from netd.core.vxlanspec import EntryPlan, ObservedEntries, ObservedVxlan, PeerEntry, VxlanSpec
from netd.kernel import child as childops
from netd.kernel import conntrack, owned, teardown
from netd.kernel import link as linkops
from netd.kernel import netns as nsops
from netd.kernel import nsid as nsidops
from netd.kernel import parent as parentops
from netd.kernel import peers as peerops
from netd.kernel import sysctl as sysctlops
from netd.kernel import vxlan as vxlanops
from netd.kernel import xfrm as xfrmops
from netd.kernel.events import link_events
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

log = structlog.get_logger()


# Sockets into other namespaces are cheap to open (~1 ms) but each holds buffers and keeps its namespace (and the
# links in it) alive after the namespace's file is gone: keep only the most recently used ones.
MAX_NS_SOCKETS = 64


@dataclass
class _NsSocket:
    ipr: Any  # AsyncIPRoute
    inode: tuple[int, int]  # (st_dev, st_ino) of the nsfs file when the socket was opened


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


async def _open_socket() -> Any:
    ipr = AsyncIPRoute()
    await ipr.setup_endpoint()
    return ipr


class Kernel:
    """Effects on the kernel, all idempotent.  Works on the netns of the thread running the event loop."""

    def __init__(self, netns_dir: Path, host_mount_namespace: str = "", owned_dir: Path | None = None) -> None:
        self.netns_dir = Path(netns_dir)
        self.owned_dir = owned_dir if owned_dir is not None else self.netns_dir.parent / "netns-owned"
        self.host_mnt = host_mount_namespace  # bind-mount named netns from there (see kernel.mountns)
        # The reconciler's socket.  A netlink socket serves one dump at a time and answers a second with EBUSY,
        # so the reads made beside a reconcile (observe, host_prefixes) open a socket of their own per call.
        self._host: Any = None
        self._opening = asyncio.Lock()
        self._ns: OrderedDict[str, _NsSocket] = OrderedDict()
        self._bridges: dict[str, int] = {}  # bridge name -> ifindex, refreshed by ensure_bridge
        self._kinds: set[str] = set()  # link kinds this kernel was found to support (a missing one is asked again)
        self._dir_ready = False  # netns_dir checked to be a shared mount (once per process)
        self._dir_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------ sockets

    async def _host_socket(self) -> Any:
        async with self._opening:  # tasks racing at start-up share one socket
            if self._host is None:
                self._host = await _open_socket()
        return self._host

    async def _adopt_fd(self, path: str, fd: int) -> Any:
        ipr = AsyncIPRoute(fileno=fd)
        try:
            await ipr.setup_endpoint()
            inode = nsops.ns_inode(path)
        except BaseException:
            ipr.close()
            raise
        self._drop(path)
        self._ns[path] = _NsSocket(ipr, inode)
        while len(self._ns) > MAX_NS_SOCKETS:  # least recently used first: a socket pins its namespace
            self._drop(next(iter(self._ns)))
        return ipr

    async def ns_socket(self, path: str) -> Any:
        """A cached request socket inside the netns at ``path``; never creates a namespace."""
        entry = self._ns.get(path)
        try:
            inode = nsops.ns_inode(path)
        except OSError as exc:
            self._drop(path)
            raise kernel_error(f"netns {path}", "open", exc, "the namespace does not exist (any more)") from exc
        if entry is not None:
            if entry.inode == inode:
                self._ns.move_to_end(path)
                return entry.ipr
            self._drop(path)  # the name now points at another namespace
        if not nsops.ns_alive(path):
            raise KernelError(f"netns {path}: open failed: not a network namespace file; remove the stale file")
        try:
            fd = await nsops.in_fresh_thread(lambda: nsops.netlink_fd_in(path), name="netd-nsopen")
        except OSError as exc:
            raise kernel_error(f"netns {path}", "open", exc) from exc
        log.debug("netns_socket_opened", netns=path)
        return await self._adopt_fd(path, fd)

    def _drop(self, path: str) -> None:
        entry = self._ns.pop(path, None)
        if entry is not None:
            entry.ipr.close()

    def forget_netns(self, path: str) -> None:
        """Evict the cached socket (call after an error that suggests the namespace is gone)."""
        self._drop(path)

    def release_netns_sockets(self) -> None:
        """Close every socket into another namespace, so none keeps a deleted namespace alive.  The reconciler
        calls it at the end of each pass, under its lock (the only user of the cached sockets)."""
        for path in list(self._ns):
            self._drop(path)

    async def close(self) -> None:
        for path in list(self._ns):
            self._drop(path)
        if self._host is not None:
            self._host.close()
            self._host = None

    # ------------------------------------------------------------------------------------------ netns

    def netns_path(self, name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise KernelError(f'netns "{name}": not a valid name; use letters, digits, "-", "_" and "."')
        return str(self.netns_dir / name)

    @staticmethod
    def ns_alive(path: str) -> bool:
        return nsops.ns_alive(path)

    @staticmethod
    def ns_identity(path: str) -> int | None:
        """The inode of the live network namespace at ``path`` (None if there is none): a reused PID's
        /proc/PID/ns/net names another namespace and has another inode.  Never blocks (see netns.open_netns)."""
        found = nsops.probe(path)
        return found.ident[1] if found.ident is not None else None

    @staticmethod
    def ns_probe(path: str) -> NsProbe:
        """What ``path`` is (a live network namespace, netd's own, a FIFO...), without blocking."""
        return nsops.probe(path)

    async def ns_has_link(self, path: str, ifname: str) -> bool:
        """Whether the namespace at ``path`` has a link of that name (netd's or anyone's).  A validation read
        beside a reconcile: asked from netd's namespace by the namespace's id (``netd.kernel.nsid``), on a
        raw socket of its own (the reconciler's could be in a dump (EBUSY); a socket inside the namespace needs
        a thread, and a cached one would keep the namespace alive after it is deleted)."""
        try:
            nsfd = nsops.open_netns(path)
        except OSError as exc:
            raise KernelError(f"netns {path}: open failed: the namespace does not exist (any more)") from exc
        try:
            return await nsidops.has_link(nsfd, ifname)
        except OSError as exc:
            raise kernel_error(f'link "{ifname}" in {path}', "get", exc) from exc
        finally:
            os.close(nsfd)

    async def ensure_netns(self, name: str, share: bool = False) -> bool:
        """``share``: the name is bound to netd's own namespace (``netns create --network host``)."""
        path = self.netns_path(name)
        if nsops.ns_alive(path):
            return False
        if not self._dir_ready:  # the first one makes the directory a shared mount: never two at once (waves)
            async with self._dir_lock:
                return await self._create_netns(name, path, share)
        return await self._create_netns(name, path, share)

    async def _create_netns(self, name: str, path: str, share: bool) -> bool:
        netns_dir, prepare = str(self.netns_dir), not self._dir_ready
        try:
            created = await nsops.in_fresh_thread(
                lambda: nsops.create_named_netns(netns_dir, name, prepare, self.host_mnt, share), name="netd-nsadd"
            )
        except OSError as exc:
            raise kernel_error(f'netns "{name}"', "create", exc) from exc
        self._dir_ready = True
        if not created:
            return False
        log.info("netns_created", netns=name, path=path)
        return True

    def owned_netns(self, names: Collection[str] | None = None) -> set[str]:
        """The netns names netd marked as created by it (all, or among ``names``)."""
        return owned.owned_netns(self.owned_dir, names)

    def netns_foreign(self, name: str) -> str | None:
        """The path of a live namespace of that name netd did not make (no marker), else None."""
        path = self.netns_path(name)
        if (self.owned_dir / name).exists() or not self.ns_alive(path):
            return None
        return path

    def mark_netns(self, name: str, owned_by_netd: bool) -> None:
        owned.mark_netns(self.owned_dir, name, owned_by_netd)

    async def remove_netns(self, name: str) -> None:
        path = self.netns_path(name)
        self._drop(path)
        try:
            removed = await nsops.in_fresh_thread(
                lambda: nsops.remove_named_netns(path, self.host_mnt), name="netd-nsrm"
            )
        except OSError as exc:
            raise kernel_error(f'netns "{name}"', "remove", exc) from exc
        if removed:
            log.info("netns_removed", netns=name, path=path)

    async def remove_netns_many(self, names: Sequence[str]) -> dict[str, OSError | None]:
        """``remove_netns`` of each, all in one fresh thread (a batch of 1000 paid a thread start each);
        returns the error of each that failed (None: removed or already gone)."""
        paths = {name: self.netns_path(name) for name in names}
        for path in paths.values():
            self._drop(path)

        def run() -> dict[str, OSError | None]:
            out: dict[str, OSError | None] = {}
            for name, path in paths.items():
                try:
                    nsops.remove_named_netns(path, self.host_mnt)
                    out[name] = None
                except OSError as exc:
                    out[name] = exc
            return out

        results = await nsops.in_fresh_thread(run, name="netd-nsrm")
        log.info("netns_removed", count=sum(e is None for e in results.values()), batch=True)
        return results

    # ------------------------------------------------------------------------------------------ links

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
        ipr = await _open_socket()
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
        ipr = await _open_socket()  # its own socket: the reconciler's may be in a dump
        try:
            if await childops.kind_supported(ipr, kind):
                self._kinds.add(kind)
        finally:
            ipr.close()
        return kind in self._kinds

    async def host_prefixes(self) -> list[IPNetwork]:
        """Every prefix the daemon's netns routes or addresses (not default routes): subnets to stay clear of.
        A validation read beside a reconcile (network create only): a socket of its own for the call."""
        ipr = await _open_socket()
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
        ``announce``: a veth created here announces its addresses (a new endpoint may reuse an address)."""
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
                await linkops.delete_links(await self._host_socket(), names)
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

    # ------------------------------------------------------------------------------------------ overlay (VXLAN)

    async def ensure_vxlan(self, spec: VxlanSpec) -> bool:
        """Create, or verify and repair, an overlay network's VXLAN device on its bridge (ensure the bridge
        first).  True when the device is new (created or recreated): its entries must be written again."""
        _index, made = await vxlanops.ensure_vxlan(await self._host_socket(), spec)
        return made

    async def observe_vxlan(self, ifname: str) -> ObservedVxlan | None:
        return await vxlanops.observe_vxlan(await self._host_socket(), ifname)

    async def observe_vxlan_entries(self, ifname: str, index: int | None = None) -> ObservedEntries:
        """The device's own FDB entries (NTF_SELF) and its neighbour entries (``index``: the device's, when
        the caller has just observed it; saves a link lookup)."""
        if index is None:
            index = await vxlanops.device_index(await self._host_socket(), ifname)
        return await vxlanops.observe_entries(index)

    async def ensure_vxlan_peers(self, ifname: str, peers: Sequence[PeerEntry]) -> EntryPlan:
        """Make the device's FDB and neighbour entries exactly those of ``peers`` (replace what is missing or
        wrong, delete the rest), in batches; returns what it changed."""
        return await vxlanops.ensure_peers(await self._host_socket(), ifname, peers)

    async def apply_vxlan_entries(self, ifname: str, plan: EntryPlan, index: int | None = None) -> None:
        """Write ``plan`` as it is (deletes, then FDB and neighbour replaces), in batches."""
        if index is None:
            index = await vxlanops.device_index(await self._host_socket(), ifname)
        await vxlanops.apply_entries(ifname, index, plan)

    async def delete_vxlan(self, ifname: str) -> None:
        """Remove the device (its entries go with it); missing is fine."""
        await self.delete_links([ifname])

    # ------------------------------------------------------------------------------------------ sysctl

    async def set_sysctl(self, key: str, value: str, ns: NsRef | None = None) -> None:
        await sysctlops.set_sysctl(key, value, ns)

    async def get_sysctl(self, key: str, ns: NsRef | None = None) -> str:
        return await sysctlops.get_sysctl(key, ns)

    # ------------------------------------------------------------------------------------------ conntrack

    async def flush_udp_conntrack(self, udp: Iterable[tuple[int, str | None, int]]) -> int:
        """Forget the UDP conntrack entries to (IP version, host address or None: any, port)."""
        return await conntrack.flush_udp(conntrack.UdpTarget(v, ip, port) for v, ip, port in udp)

    # ------------------------------------------------------------------------------------------ IPsec (XFRM)

    async def probe_esp(self) -> None:
        """KernelError saying what to load unless ESP + rfc4106(gcm(aes)) work (checked in a scratch netns)."""
        await xfrmops.probe_esp()

    async def observe_xfrm(self) -> DesiredXfrm:
        """netd's own ESP SAs and out policies in the daemon's netns (reqid/mark 0x6E<VNI>), nothing foreign."""
        xs = await xfrmops.open_xfrm()
        with xs:
            return await xfrmops.observe_xfrm(xs)

    async def apply_xfrm(self, actions: Sequence[xfrmops.Action]) -> None:
        """The ordered actions of ``overlay_crypto.plan_xfrm``."""
        xs = await xfrmops.open_xfrm()
        with xs:
            await xfrmops.apply_xfrm(xs, actions)

    # ------------------------------------------------------------------------------------------ events

    async def events(self) -> AsyncGenerator[str, None]:
        async for reason in link_events():
            yield reason
