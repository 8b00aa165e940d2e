"""macvlan/ipvlan endpoints: children of a parent in the daemon's namespace, created directly in the
endpoint's namespace (IFLA_LINK = parent, IFLA_NET_NS_FD = target), then configured there."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg.plugins.ipvlan import ipvlan as _ipvlan_nla

from netd.core.errors import KernelError
from netd.core.linkspec import ChildSpec, ObservedChild, owner_alias, owner_of
from netd.kernel.announce import announce
from netd.kernel.link import configure_peer, get_link
from netd.kernel.netns import open_netns
from netd.kernel.nlerror import kernel_error
from netd.kernel.observe import addresses_by_index, decode_link, observed_link, raw_of

log = structlog.get_logger()

IPR = Any
NsSocket = Callable[[str], Awaitable[IPR]]
CHILD_KINDS = ("macvlan", "ipvlan")

# pyroute2 0.9 knows IFLA_IPVLAN_MODE only; the kernel's IFLA_IPVLAN_FLAGS (2, u16) is added here.
if not any(name == "IFLA_IPVLAN_FLAGS" for name, _ in _ipvlan_nla.nla_map):
    _ipvlan_nla.nla_map = (*_ipvlan_nla.nla_map, ("IFLA_IPVLAN_FLAGS", "uint16"))


async def ensure_child(ipr: IPR, ns_socket: NsSocket, spec: ChildSpec) -> None:
    obj = f'{spec.kind} "{spec.peer_ifname}" in {spec.netns.path}'
    nsipr = await ns_socket(spec.netns.path)
    try:
        msg = await get_link(nsipr, spec.peer_ifname)
        if msg is not None:
            link = decode_link(msg)
            if link.owner != spec.owner or link.kind != spec.kind:
                raise KernelError(
                    f'{obj}: an interface of kind "{link.kind}" owned by {link.owner or "nobody"} already has '
                    "this name; remove it or connect with another namespace"
                )
            change: dict[str, Any] = {}
            if spec.mac and link.mac.lower() != spec.mac.lower():
                change["address"] = spec.mac
            if spec.mtu and link.mtu != spec.mtu:
                change["mtu"] = spec.mtu
            if change:  # drifted inside the namespace (a full pass saw it)
                await nsipr.link("set", index=link.index, **change)
            await _configure(nsipr, spec, link.index, obj)
            return
        parent = await get_link(ipr, spec.parent)
        if parent is None:
            raise KernelError(
                f'{obj}: parent "{spec.parent}" does not exist; a reconcile recreates netd\'s parents'
            )
        await _create(ipr, spec, int(parent["index"]), obj)
        msg = await get_link(nsipr, spec.peer_ifname)
        if msg is None:
            raise KernelError(f"{obj}: vanished right after it was created")
        index = int(msg["index"])
        try:
            await nsipr.link("set", index=index, ifalias=owner_alias(spec.owner))
            await _configure(nsipr, spec, index, obj)
        except BaseException:
            with contextlib.suppress(NetlinkError):
                await nsipr.link("del", index=index)
            raise
        log.info(
            "link_created", kind=spec.kind, ifname=spec.peer_ifname, netns=spec.netns.path, parent=spec.parent
        )
        await announce(spec.netns.path, spec.peer_ifname, spec.addresses)
    except NetlinkError as exc:
        raise kernel_error(obj, "configure", exc) from exc


async def _create(ipr: IPR, spec: ChildSpec, parent_index: int, obj: str) -> None:
    try:
        nsfd = open_netns(spec.netns.path)  # never blocks on a FIFO put in its place
    except OSError as exc:
        raise kernel_error(obj, "open the namespace", exc, "the namespace does not exist (any more)") from exc
    kw: dict[str, Any] = {"ifname": spec.peer_ifname, "kind": spec.kind, "link": parent_index, "net_ns_fd": nsfd}
    if spec.kind == "macvlan":
        kw["macvlan_mode"] = spec.kernel_mode
    else:
        kw["ipvlan_mode"] = spec.kernel_mode
        kw["ipvlan_flags"] = spec.kernel_flags
    if spec.mac:
        kw["address"] = spec.mac
    if spec.mtu:
        kw["mtu"] = spec.mtu
    try:
        await ipr.link("add", **kw)
    except NetlinkError as exc:
        raise kernel_error(obj, f"create on {spec.parent}", exc) from exc
    finally:
        os.close(nsfd)


async def _configure(nsipr: IPR, spec: ChildSpec, index: int, obj: str) -> None:
    await configure_peer(nsipr, spec)
    if spec.default_dev:
        try:
            await nsipr.route("replace", dst="0.0.0.0/0", oif=index)
            if any(a.version == 6 for a in spec.addresses):
                await nsipr.route("replace", dst="::/0", oif=index, family=socket.AF_INET6)
        except NetlinkError as exc:
            raise kernel_error(obj, "add the default route", exc) from exc


async def observe_children(ns_socket: NsSocket, path: str) -> list[ObservedChild]:
    """netd's macvlan/ipvlan children in one namespace (by their alias)."""
    nsipr = await ns_socket(path)
    links = [raw_of(m) async for m in await nsipr.link("dump")]
    owned = [raw for raw in links if owner_of(raw.alias) is not None]
    if not owned:
        return []
    addrs = addresses_by_index([m async for m in await nsipr.addr("dump")])
    out = []
    for raw in owned:
        link = observed_link(raw, tuple(addrs.get(raw.index, ())))
        if link.kind in CHILD_KINDS:
            out.append(ObservedChild(link, path))
    return out


async def delete_children(ns_socket: NsSocket, children: Iterable[tuple[str, str]]) -> None:
    for path, ifname in children:
        try:
            nsipr = await ns_socket(path)
        except KernelError:
            continue  # the namespace is gone, and the child with it
        msg = await get_link(nsipr, ifname)
        link = decode_link(msg) if msg is not None else None
        if link is None or link.kind not in CHILD_KINDS or link.owner is None:
            continue
        try:
            await nsipr.link("del", index=link.index)
        except NetlinkError as exc:
            raise kernel_error(f"{ifname} in {path}", "delete", exc) from exc
        log.info("link_deleted", ifname=ifname, netns=path)


PROBE_IFNAME = "netd-probe0"


async def kind_supported(ipr: IPR, kind: str) -> bool:
    """Whether this kernel can make links of ``kind`` (ipvlan, macvlan), asked the way a create would ask.

    A create of that kind on the loopback device: a kernel without the kind (no module, or one that cannot be
    loaded) answers EOPNOTSUPP; one with it refuses lo as the lower device (EINVAL) and creates nothing.  So the
    kernel's own module autoloading decides, as at a real create, and no namespace or link is left behind
    (should a kernel ever accept lo, the probe link is deleted at once).
    """
    try:
        await ipr.link("add", ifname=PROBE_IFNAME, kind=kind, link=1)
    except NetlinkError as exc:
        return bool(exc.code != errno.EOPNOTSUPP)
    with contextlib.suppress(NetlinkError):
        await ipr.link("del", ifname=PROBE_IFNAME)
    return True
