"""Parents of macvlan/ipvlan networks in the daemon's namespace: 802.1q sub-interfaces and dummies netd makes,
plus the host_access shim.  Thin: specs in, netlink requests out, KernelError on failure."""

from __future__ import annotations

import errno
import socket
from typing import Any

import structlog
from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError
from netd.core.linkspec import ParentSpec, ShimSpec, owner_alias
from netd.kernel.link import add_address, get_link, link_addresses
from netd.kernel.nlerror import kernel_error
from netd.kernel.observe import decode_link

log = structlog.get_logger()

IPR = Any  # pyroute2 AsyncIPRoute (untyped)


async def ensure_parent(ipr: IPR, spec: ParentSpec) -> int:
    """Check (someone else's) or create-or-repair (netd's) the parent; returns its ifindex."""
    obj = f'parent "{spec.ifname}"'
    plog = log.bind(ifname=spec.ifname, owner=spec.owner, kind=spec.kind)
    try:
        msg = await get_link(ipr, spec.ifname)
        created = False
        if msg is None:
            if not spec.managed:
                raise KernelError(
                    f"{obj}: not found; netd does not own it and will not create it: bring the interface back "
                    "or remove the networks that use it"
                )
            await _create(ipr, spec, obj)
            created = True
            plog.info("link_created", vlan=spec.vlan_id, base=spec.base)
            msg = await get_link(ipr, spec.ifname)
            if msg is None:
                raise KernelError(f"{obj}: vanished right after it was created; another tool is deleting it")
        link = decode_link(msg)
        if not spec.managed:
            return link.index
        if link.kind != spec.kind or (spec.kind == "vlan" and link.vlan_id != spec.vlan_id):
            raise KernelError(
                f"{obj}: an interface of kind {link.kind} (VLAN {link.vlan_id}) already has this name; "
                "remove it or the network"
            )
        change: dict[str, Any] = {}
        if link.owner is None:
            if not created and link.up:
                raise KernelError(f"{obj}: exists and is not managed by netd; remove it or the network")
            change["ifalias"] = owner_alias(spec.owner)
        if not link.up:
            change["state"] = "up"
        if change:
            await ipr.link("set", index=link.index, **change)
            plog.info("link_updated", changed=sorted(change))
        return link.index
    except NetlinkError as exc:
        raise kernel_error(obj, "configure", exc) from exc


async def _create(ipr: IPR, spec: ParentSpec, obj: str) -> None:
    kw: dict[str, Any] = {"ifname": spec.ifname, "kind": spec.kind}
    if spec.kind == "vlan":
        assert spec.base is not None and spec.vlan_id is not None
        base = await get_link(ipr, spec.base)
        if base is None:
            raise KernelError(
                f'{obj}: its interface "{spec.base}" does not exist; bring it back or remove the network'
            )
        kw.update(link=int(base["index"]), vlan_id=spec.vlan_id)
    try:
        await ipr.link("add", **kw)
    except NetlinkError as exc:
        raise kernel_error(obj, f"create ({spec.kind})", exc) from exc


async def ensure_shim(ipr: IPR, spec: ShimSpec) -> None:
    """A macvlan in bridge mode beside the endpoints: the kernel does not pass parent <-> child traffic."""
    obj = f'host_access shim "{spec.ifname}"'
    try:
        msg = await get_link(ipr, spec.ifname)
        if msg is None:
            parent = await get_link(ipr, spec.parent)
            if parent is None:
                raise KernelError(f'{obj}: parent "{spec.parent}" does not exist')
            await ipr.link(
                "add",
                ifname=spec.ifname,
                kind="macvlan",
                link=int(parent["index"]),
                macvlan_mode=spec.kernel_mode,
            )
            msg = await get_link(ipr, spec.ifname)
            if msg is None:
                raise KernelError(f"{obj}: vanished right after it was created")
            log.info("link_created", kind="macvlan", ifname=spec.ifname, owner=spec.owner)
        link = decode_link(msg)
        if link.kind != "macvlan" or (link.owner not in (None, spec.owner)):
            raise KernelError(f"{obj}: another interface already has this name; remove it")
        if link.owner is None or not link.up:
            await ipr.link("set", index=link.index, ifalias=owner_alias(spec.owner), state="up")
        if spec.address not in await link_addresses(ipr, link.index):
            await add_address(ipr, link.index, spec.address)
        for dst in spec.routes:
            await _ensure_route(ipr, link.index, str(dst), dst.version, obj)
    except NetlinkError as exc:
        raise kernel_error(obj, "configure", exc) from exc


async def _ensure_route(ipr: IPR, index: int, dst: str, version: int, obj: str) -> None:
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        await ipr.route("add", dst=dst, oif=index, family=family)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
        routes = [m async for m in await ipr.route("dump", family=family)]
        prefix, _, plen = dst.partition("/")
        ours = any(
            m.get_attr("RTA_OIF") == index and m.get_attr("RTA_DST") == prefix and str(m["dst_len"]) == plen
            for m in routes
        )
        if not ours:
            raise kernel_error(
                obj,
                f"route {dst}",
                exc,
                "the host already routes this prefix elsewhere: give the network an "
                "--ip-range for its endpoints (the shim routes only that range)",
            ) from exc
