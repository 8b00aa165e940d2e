"""Bridge and veth create-or-verify (deletes: kernel.teardown).  Thin: netlink requests in, KernelError out."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError
from netd.core.linkspec import BridgeSpec, ChildSpec, Iface, VethSpec, owner_alias
from netd.kernel import nlbatch
from netd.kernel.nlbatch import IFA_F_NODAD
from netd.kernel.nlerror import KernelOpError, kernel_error
from netd.kernel.observe import Msg, addresses_by_index, decode_link, observed_link, raw_of
from netd.kernel.rtraw import IFF_UP
from netd.kernel.vethup import create_veth

log = structlog.get_logger()

BRIDGE_NAME_HINT = "pick another name with -o com.docker.network.bridge.name"

IPR = Any  # pyroute2 AsyncIPRoute (untyped)
NsSocket = Callable[[str], Awaitable[IPR]]


def drop_late_acks(ipr: IPR) -> None:
    """pyroute2 0.9 ends a "get" at the kernel's reply and frees its sequence number; the ack that follows it
    (the request carries NLM_F_ACK) lands in the socket's queue for unsolicited messages, which a request socket
    never reads.  One datagram per get, kept for the socket's life (~8 MiB of RSS over 1000 connects)."""
    root = ipr.msg_queue.root
    while not root.empty():
        root.get_nowait()
        root.task_done()


async def get_link(ipr: IPR, ifname: str) -> Msg | None:
    drop_late_acks(ipr)  # the previous gets' acks
    try:
        msgs = await ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return msgs[0] if msgs else None


async def link_addresses(ipr: IPR, index: int) -> list[Iface]:
    msgs = [m async for m in await ipr.addr("dump", index=index)]
    return addresses_by_index(m for m in msgs if m["index"] == index).get(index, [])


async def add_address(ipr: IPR, index: int, iface: Iface) -> None:
    kw: dict[str, Any] = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    if iface.version == 6:
        kw["flags"] = IFA_F_NODAD
    try:
        await ipr.addr("add", **kw)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise


# ---------------------------------------------------------------------------------------------- bridge


async def ensure_bridge(ipr: IPR, spec: BridgeSpec) -> int:
    """Create or adopt the bridge, fix mtu/alias/up/addresses; returns its ifindex."""
    obj = f'bridge "{spec.ifname}"'
    blog = log.bind(ifname=spec.ifname, owner=spec.owner)
    created = False  # made here, this call: fresh, no addresses (no need to look)
    try:
        msg = await get_link(ipr, spec.ifname)
        if msg is None:
            if spec.adopt:
                raise KernelError(
                    f"{obj}: adopt failed: no such interface; create it first or do not ask netd to adopt it"
                )
            kw: dict[str, Any] = {"ifname": spec.ifname, "kind": "bridge", "br_stp_state": 0}
            kw["br_forward_delay"] = 0
            # no IFLA_MTU here: the create's MTU is not "set by the user" for the bridge, which then resets a
            # portless bridge to 1500 when its last port leaves.  The change request below (mtu drift against
            # the new bridge's 1500) is, and the kernel keeps it (br_mtu_auto_adjust, BROPT_MTU_SET_BY_USER).
            if spec.mac:
                kw["address"] = spec.mac
            try:
                await ipr.link("add", **kw)
            except NetlinkError as exc:
                hint = "another interface already has this name; " + BRIDGE_NAME_HINT
                raise kernel_error(obj, "create", exc, hint if exc.code == errno.EEXIST else None) from exc
            blog.info("link_created", kind="bridge")
            created = True
            msg = await get_link(ipr, spec.ifname)
            if msg is None:
                raise KernelError(f"{obj}: vanished right after it was created; another tool is deleting it")
        raw = raw_of(msg)
        link = observed_link(raw)
        if link.kind != "bridge":
            raise KernelError(
                f'{obj}: an interface of kind "{link.kind}" already has this name; {BRIDGE_NAME_HINT}'
            )
        alias = raw.alias
        if not spec.adopt and alias and link.owner != spec.owner:
            raise KernelError(
                f'{obj}: already belongs to "{alias}", not to network {spec.owner}; {BRIDGE_NAME_HINT}'
            )
        # (_looks_fresh decodes every link and address of the namespace: 11 ms a bridge in a 50-network replay)
        if not spec.adopt and not alias and not created and not await _looks_fresh(ipr, link.up, link.index):
            raise KernelError(f"{obj}: exists and is not managed by netd; {BRIDGE_NAME_HINT}, or adopt it")
        change: dict[str, Any] = {}
        if not spec.adopt and not alias:
            change["ifalias"] = owner_alias(spec.owner)
        if spec.mtu and link.mtu != spec.mtu:
            change["mtu"] = spec.mtu
        if spec.mac and link.mac.lower() != spec.mac:
            change["address"] = spec.mac
        if not link.up:
            change["state"] = "up"
        if change:
            await ipr.link("set", index=link.index, **change)
            blog.info("link_updated", kind="bridge", changed=sorted(change))
        await _sync_addresses(
            ipr, link.index, spec.addresses, remove_extra=not spec.adopt, blog=blog, fresh=created
        )
        return link.index
    except NetlinkError as exc:
        raise kernel_error(obj, "configure", exc) from exc


async def remove_addresses(ipr: IPR, ifname: str, addresses: Sequence[Iface]) -> list[Iface]:
    """Delete those of ``addresses`` that ``ifname`` has (and nothing else); returns the ones deleted."""
    msg = await get_link(ipr, ifname)
    if msg is None:
        return []
    index = int(msg["index"])
    have = await link_addresses(ipr, index)
    done = []
    try:
        for iface in addresses:
            if iface in have:
                await ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                log.info("addr_removed", ifname=ifname, address=str(iface))
                done.append(iface)
    except NetlinkError as exc:
        raise kernel_error(f'link "{ifname}"', "address removal", exc) from exc
    return done


async def _looks_fresh(ipr: IPR, up: bool, index: int) -> bool:
    """An alias-less bridge that is down, without ports and addresses: the one netd just created (the alias
    needs a second request; netd may have stopped in between).  Anything else is someone else's."""
    if up or await link_addresses(ipr, index):
        return False
    return not [m async for m in await ipr.link("dump") if raw_of(m).master == index]


async def _sync_addresses(
    ipr: IPR, index: int, want: Sequence[Iface], *, remove_extra: bool, blog: Any, fresh: bool = False
) -> None:
    """``fresh``: the link was just created and has no addresses yet (no dump to read)."""
    have = [] if fresh else await link_addresses(ipr, index)
    for iface in want:
        if iface not in have:
            await add_address(ipr, index, iface)
            blog.info("addr_added", address=str(iface))
    if remove_extra:
        for iface in have:
            if iface not in want:
                await ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                blog.info("addr_removed", address=str(iface))


# ---------------------------------------------------------------------------------------------- veth


async def ensure_veth(
    ipr: IPR,
    ns_socket: NsSocket,
    spec: VethSpec,
    bridge_index: int,
    *,
    seen_missing: bool = False,
    reconfigure: bool = False,
    announce: bool = True,
) -> bool:
    """Create-or-verify one endpoint.  Returns True if anything was changed.

    ``seen_missing``: the caller's observe just found no link of this name, so try the create first (one
    round trip less per connect); if the name turns out to be taken, fall back to the full check.
    ``reconfigure``: the namespace side changed in the desired state: re-apply it though the host side is right."""
    obj = f'veth "{spec.host_ifname}"'
    vlog = log.bind(ifname=spec.host_ifname, owner=spec.owner, netns=spec.netns.path)
    if seen_missing:
        try:
            await _create_veth(ipr, ns_socket, spec, bridge_index, obj, clear_stale=False, announce=announce)
            vlog.info("link_created", kind="veth", peer=spec.peer_ifname)
            return True
        except KernelOpError as exc:
            if exc.errno != errno.EEXIST:
                raise
    try:
        msg = await get_link(ipr, spec.host_ifname)
        if msg is not None:
            raw = raw_of(msg)
            if raw.kind == "veth" and raw.alias is None and not raw.flags & IFF_UP:
                # alias and IFF_UP are set by the last request of a create: netd stopped half-way. Start over.
                vlog.warning("veth_half_built_removed")
                await ipr.link("del", index=raw.index)
                msg = None
        if msg is not None:
            raw = raw_of(msg)
            link = observed_link(raw)
            if link.kind != "veth" or link.owner != spec.owner:
                raise KernelError(
                    f'{obj}: an interface of kind "{link.kind}" owned by '
                    f"{raw.alias or 'nobody'} already has this name; "
                    "remove it or choose another endpoint name"
                )
            if msg.get_attr("IFLA_LINK_NETNSID") is None:
                vlog.warning("veth_peer_misplaced")  # the peer is in our own netns: recreate
                await ipr.link("del", index=link.index)
            else:
                change: dict[str, Any] = {}
                if link.master != bridge_index:
                    change["master"] = bridge_index
                if spec.mtu and link.mtu != spec.mtu:
                    change["mtu"] = spec.mtu
                if not link.up:
                    change["state"] = "up"
                if not change and not reconfigure:
                    return False
                if change:
                    await ipr.link("set", index=link.index, **change)
                vlog.info("link_updated", kind="veth", changed=sorted(change) or ["namespace side"])
                nsipr = await ns_socket(spec.netns.path)
                await configure_peer(nsipr, spec)
                if reconfigure and spec.mtu:
                    await _peer_mtu(nsipr, spec)
                return True
        await _create_veth(ipr, ns_socket, spec, bridge_index, obj, announce=announce)
        vlog.info("link_created", kind="veth", peer=spec.peer_ifname)
        return True
    except NetlinkError as exc:
        raise kernel_error(obj, "configure", exc) from exc


async def _create_veth(
    ipr: IPR,
    ns_socket: NsSocket,
    spec: VethSpec,
    bridge_index: int,
    obj: str,
    *,
    clear_stale: bool = True,
    announce: bool = True,
) -> None:
    """The create and everything after it in one namespace-worker job (vethup): raw requests on blocking
    sockets, off the event loop (the kernel builds the pair inside sendmsg).  A name taken in the namespace by
    a leftover veth of netd's is cleared here (on the loop) and the create tried once more."""
    for attempt in (1, 2):
        try:
            sent = await create_veth(spec, bridge_index, announce)
            break
        except KernelOpError as exc:
            if (
                exc.errno != errno.EEXIST
                or attempt == 2
                or not clear_stale
                or not await _clear_stale_peer(ns_socket, spec)
            ):
                raise
    if sent < 0:
        log.warning("announce_failed", netns=spec.netns.path, ifname=spec.peer_ifname)


async def _clear_stale_peer(ns_socket: NsSocket, spec: VethSpec) -> bool:
    """EEXIST on create: if a leftover veth *of netd's* (its alias) of the peer's name sits in the target netns,
    delete it.  Anything else there (a container runtime's eth0) is not netd's to touch: the create fails."""
    nsipr = await ns_socket(spec.netns.path)
    msg = await get_link(nsipr, spec.peer_ifname)
    if msg is None:
        return False
    link = decode_link(msg)
    if link.owner is None:
        raise KernelError(
            f'peer "{spec.peer_ifname}" in {spec.netns.path}: an interface of kind "{link.kind or "device"}" '
            "not made by netd already has this name; netd leaves it alone: disconnect and connect again "
            "(netd then picks a free ethN), or remove that interface"
        )
    if link.kind != "veth":
        return False
    log.warning("stale_peer_removed", ifname=spec.peer_ifname, netns=spec.netns.path, owner=link.owner)
    await nsipr.link("del", index=msg["index"])
    return True


async def configure_peer(nsipr: IPR, spec: VethSpec | ChildSpec, peer_index: int | None = None) -> None:
    """Addresses (IPv6 nodad), up, default routes: all idempotent.  ``peer_index`` given = freshly created."""
    where = f'peer "{spec.peer_ifname}" in {spec.netns.path}'
    try:
        if peer_index is None:
            msg = await get_link(nsipr, spec.peer_ifname)
            if msg is None:
                raise KernelError(f"{where}: missing; the namespace is being torn down or the peer was moved")
            index, up = int(msg["index"]), bool(msg["flags"] & IFF_UP)
        else:
            index, up = peer_index, False
        # one datagram, handled in this order by the kernel: addresses, up, then the routes via the gateways
        msgs = [nlbatch.add_address(index, iface) for iface in spec.addresses]
        if not up:  # a fresh veth peer gets netd's alias with it: what is not marked is never deleted
            fresh_veth = peer_index is not None and isinstance(spec, VethSpec)
            msgs.append(nlbatch.set_up(index, owner_alias(spec.owner) if fresh_veth else None))
        for gateway in (spec.gateway4, spec.gateway6):
            if gateway is not None:
                msgs.append(nlbatch.replace_default_route(index, gateway))
        results = await nlbatch.run(nsipr, msgs)
        for i, err in enumerate(results):
            if err is not None and not (i < len(spec.addresses) and err.code == errno.EEXIST):
                raise err
    except NetlinkError as exc:
        raise kernel_error(where, "configure", exc) from exc


async def _peer_mtu(nsipr: IPR, spec: VethSpec) -> None:
    """The namespace side's MTU (a reload changed the network's): the kernel keeps each end's own."""
    where = f'peer "{spec.peer_ifname}" in {spec.netns.path}'
    try:
        msg = await get_link(nsipr, spec.peer_ifname)
        if msg is not None and decode_link(msg).mtu != spec.mtu:
            await nsipr.link("set", index=int(msg["index"]), mtu=spec.mtu)
    except NetlinkError as exc:
        raise kernel_error(where, "set the mtu", exc) from exc


async def peer_ok(nsipr: IPR, spec: VethSpec) -> bool:
    msg = await get_link(nsipr, spec.peer_ifname)
    if msg is None:
        return False
    link = decode_link(msg)
    if link.kind != "veth" or not link.up or link.mac.lower() != spec.mac.lower():
        return False
    have = await link_addresses(nsipr, link.index)
    return all(a in have for a in spec.addresses)
