"""Netlink events in the daemon's netns, reduced to short reasons for the reconciler's trigger queue."""

from __future__ import annotations

import errno
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import structlog
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK

from netd.kernel.nlerror import errno_of
from netd.kernel.observe import IFF_UP, Msg, decode_addr

log = structlog.get_logger()

GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
RESYNC = "resync"


@dataclass
class _LinkState:
    ifname: str
    up: bool
    master: int | None


class LinkTracker:
    """Remembers each link's name/up/master so an RTM_NEWLINK can be told apart from a no-op notification."""

    def __init__(self) -> None:
        self.links: dict[int, _LinkState] = {}

    def seed(self, msgs: list[Msg]) -> None:
        self.links = {int(m["index"]): self._state(m) for m in msgs}

    @staticmethod
    def _state(msg: Msg) -> _LinkState:
        master = msg.get_attr("IFLA_MASTER")
        return _LinkState(str(msg.get_attr("IFLA_IFNAME")), bool(msg["flags"] & IFF_UP), master or None)

    def reason(self, msg: Msg) -> str | None:
        event = msg.get("event")
        index = int(msg["index"])
        if event == "RTM_DELLINK":
            old = self.links.pop(index, None)
            return f"link_deleted:{msg.get_attr('IFLA_IFNAME') or (old.ifname if old else index)}"
        if event == "RTM_NEWLINK":
            new = self._state(msg)
            old = self.links.get(index)
            self.links[index] = new
            if old is None:
                return None  # a new link (netd's own creations land here)
            if old.up and not new.up:
                return f"link_down:{new.ifname}"
            if old.master != new.master:
                return f"link_master_changed:{new.ifname}"
            if old.ifname != new.ifname:
                return f"link_renamed:{old.ifname}"
            return None
        if event == "RTM_DELADDR":
            iface = decode_addr(msg)
            if iface is None:
                return None  # IPv6 link-local: not netd's
            old = self.links.get(index)
            return f"addr_deleted:{old.ifname if old else index}:{iface}"
        return None


async def _open_bound(rcvbuf: int) -> tuple[Any, LinkTracker]:
    ev = AsyncIPRoute(rcvbuf=rcvbuf)
    try:
        await ev.bind(groups=GROUPS)
        tracker = LinkTracker()
        tracker.seed([m async for m in await ev.link("dump")])
    except BaseException:
        ev.close()
        raise
    return ev, tracker


async def link_events(rcvbuf: int = 4 << 20) -> AsyncGenerator[str, None]:
    """Yield reasons forever; ``"resync"`` after ENOBUFS (events were lost: do a full observe)."""
    while True:
        ev, tracker = await _open_bound(rcvbuf)
        try:
            while True:
                async for msg in ev.get():
                    reason = tracker.reason(msg)
                    if reason is not None:
                        yield reason
        except (NetlinkError, OSError) as exc:
            if errno_of(exc) != errno.ENOBUFS:
                raise
            log.warning("netlink_events_overrun")
        finally:
            ev.close()
        yield RESYNC  # the socket is reopened (pyroute2 poisons it after an error)
