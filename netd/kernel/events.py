"""Netlink events in the daemon's netns, reduced to short reasons for the reconciler's trigger queue.

Every link netd creates or changes sends a few RTM_NEWLINK notifications; decoding them with pyroute2 cost
~2 ms of the event loop per connect.  The reader here is a raw socket and takes only the fields a reason needs
(index, name, up, master; the address of an RTM_DELADDR) with ``struct``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass

import structlog

from netd.core.linkspec import Iface
from netd.kernel.rtraw import (
    IFF_UP,
    NETLINK_ROUTE,
    NLMSG_ERROR,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    decode_addr,
    decode_link,
    dump_request,
    error_of,
    messages,
)

log = structlog.get_logger()

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
RESYNC = "resync"

SO_RCVBUFFORCE = 33  # socket.SO_RCVBUFFORCE is missing on some builds
DUMP_SEQ = 1
RECV_SIZE = 1 << 16  # a dump datagram is at most 32 KiB


@dataclass(frozen=True, slots=True)
class LinkMsg:
    deleted: bool
    index: int
    ifname: str
    up: bool
    master: int | None


@dataclass(frozen=True, slots=True)
class AddrMsg:
    deleted: bool
    index: int
    iface: Iface | None  # None: an IPv6 link-local address (the kernel's, not netd's)


Event = LinkMsg | AddrMsg


def _link(data: bytes, pos: int, end: int, deleted: bool) -> LinkMsg:
    raw = decode_link(data, pos, end)
    return LinkMsg(deleted, raw.index, raw.ifname, bool(raw.flags & IFF_UP), raw.master)


def _addr(data: bytes, pos: int, end: int, deleted: bool) -> AddrMsg | None:
    found = decode_addr(data, pos, end)
    return AddrMsg(deleted, found[0], found[1]) if found is not None else None


def decode(data: bytes, own_pid: int) -> Iterator[tuple[bool, Event]]:
    """(is a reply to our own dump, event) per link/address message.  Raises the error answering our dump."""
    for mtype, _flags, seq, pid, pos, end in messages(data):
        mine = pid == own_pid and seq == DUMP_SEQ
        if mtype in (RTM_NEWLINK, RTM_DELLINK):
            yield mine, _link(data, pos, end, mtype == RTM_DELLINK)
        elif mtype in (RTM_NEWADDR, RTM_DELADDR):
            addr = _addr(data, pos, end, mtype == RTM_DELADDR)
            if addr is not None:
                yield mine, addr
        elif mine and mtype == NLMSG_ERROR:
            err = error_of(data, pos, "link dump")
            if err is not None:
                raise err


@dataclass(slots=True)
class _LinkState:
    ifname: str
    up: bool
    master: int | None


class LinkTracker:
    """Remembers each link's name/up/master so an RTM_NEWLINK can be told apart from a no-op notification."""

    def __init__(self) -> None:
        self.links: dict[int, _LinkState] = {}

    def remember(self, msg: LinkMsg) -> None:
        self.links[msg.index] = _LinkState(msg.ifname, msg.up, msg.master)

    def reason(self, msg: Event) -> str | None:
        if isinstance(msg, AddrMsg):
            if not msg.deleted or msg.iface is None:
                return None  # new addresses, and IPv6 link-local ones, are not drift
            old = self.links.get(msg.index)
            return f"addr_deleted:{old.ifname if old else msg.index}:{msg.iface}"
        if msg.deleted:
            gone = self.links.pop(msg.index, None)
            return f"link_deleted:{msg.ifname or (gone.ifname if gone else msg.index)}"
        old = self.links.get(msg.index)
        self.remember(msg)
        if old is None:
            return None  # a new link (netd's own creations land here)
        if old.up and not msg.up:
            return f"link_down:{msg.ifname}"
        if old.master != msg.master:
            return f"link_master_changed:{msg.ifname}"
        if old.ifname != msg.ifname:
            return f"link_renamed:{old.ifname}"
        return None


def _open(rcvbuf: int) -> socket.socket:
    flags = socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    sock = socket.socket(socket.AF_NETLINK, flags, NETLINK_ROUTE)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)  # root: past net.core.rmem_max
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, GROUPS))
        # seed the tracker: subscribed first, so nothing that happens during the dump is missed
        sock.send(dump_request(RTM_GETLINK, DUMP_SEQ))
    except BaseException:
        sock.close()
        raise
    return sock


async def link_events(rcvbuf: int = 4 << 20) -> AsyncGenerator[str, None]:
    """Yield reasons forever; ``"resync"`` after ENOBUFS (events were lost: do a full observe)."""
    loop = asyncio.get_running_loop()
    while True:
        sock = _open(rcvbuf)
        own_pid = sock.getsockname()[0]
        tracker = LinkTracker()
        try:
            while True:
                data = await loop.sock_recv(sock, RECV_SIZE)
                for from_dump, msg in decode(data, own_pid):
                    if from_dump:
                        if isinstance(msg, LinkMsg):
                            tracker.remember(msg)
                        continue
                    reason = tracker.reason(msg)
                    if reason is not None:
                        yield reason
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            log.warning("netlink_events_overrun")
        finally:
            sock.close()
        yield RESYNC  # events were lost: a new socket, a new dump
