"""An endpoint's interface seen from inside its namespace (link, addresses, default routes: CNI's CHECK), and
set again when it drifted.

Read on full passes and ``check`` (and for the endpoints a change hands the default route to), never on a
connect: one link get, one address dump and one route dump per family on the namespace's cached socket."""

from __future__ import annotations

import errno
import socket
from typing import Any

import structlog
from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError
from netd.core.linkspec import ObservedPeer, VethSpec
from netd.kernel.link import configure_peer, get_link
from netd.kernel.nlerror import kernel_error
from netd.kernel.observe import decode_addr, decode_link

log = structlog.get_logger()

IPR = Any


async def observe_peer(nsipr: IPR, ifname: str) -> ObservedPeer | None:
    """None when the namespace has no interface of that name."""
    msg = await get_link(nsipr, ifname)
    if msg is None:
        return None
    index = int(msg["index"])
    addrs = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        async for m in await nsipr.addr("dump", family=fam):
            if int(m["index"]) == index and (iface := decode_addr(m)) is not None:
                addrs.append(iface)
    link = decode_link(msg, tuple(addrs))
    gateways: dict[int, str | None] = {socket.AF_INET: None, socket.AF_INET6: None}
    for family in gateways:
        try:
            routes = [r async for r in await nsipr.route("dump", family=family)]
        except NetlinkError as exc:
            if exc.code == errno.EAFNOSUPPORT:  # IPv6 off in that namespace
                continue
            raise
        for r in routes:
            if r["dst_len"] != 0 or r.get_attr("RTA_OIF") != index or r.get_attr("RTA_TABLE") not in (None, 254):
                continue
            gateways[family] = str(r.get_attr("RTA_GATEWAY") or "")
    return ObservedPeer(link, gateway4=gateways[socket.AF_INET], gateway6=gateways[socket.AF_INET6])


async def repair_peer(nsipr: IPR, spec: VethSpec) -> None:
    """The namespace side of an existing veth set again: MAC and MTU, then (``configure_peer``) up, addresses
    and the default routes.  Called when an observe found it drifted (``ip addr flush``, ``ip route del``)."""
    where = f'peer "{spec.peer_ifname}" in {spec.netns.path}'
    try:
        msg = await get_link(nsipr, spec.peer_ifname)
        if msg is None:
            raise KernelError(f"{where}: missing; the namespace is being torn down or the peer was moved")
        link = decode_link(msg)
        change: dict[str, Any] = {}
        if spec.mac and link.mac.lower() != spec.mac.lower():
            change["address"] = spec.mac
        if spec.mtu and link.mtu != spec.mtu:
            change["mtu"] = spec.mtu
        if change:
            await nsipr.link("set", index=link.index, **change)
    except NetlinkError as exc:
        raise kernel_error(where, "repair", exc) from exc
    await configure_peer(nsipr, spec)
    log.info(
        "peer_repaired", ifname=spec.peer_ifname, netns=spec.netns.path, owner=spec.owner, changed=sorted(change)
    )
