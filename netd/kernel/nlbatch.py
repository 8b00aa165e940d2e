"""Several rtnetlink requests in one datagram.

The kernel handles the messages of one datagram in order and acks each, so an endpoint's addresses, link-up
and default routes (which depend on each other in that order) go in one ``send`` and one wait, instead of five
round trips: 0.96 against 1.56 ms per endpoint, measured in a namespace with 200 veths.  Built on pyroute2's
message classes and its request bookkeeping (sequence numbers, answer queues) of the pinned 0.9 version.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nlsocket import NetlinkRequest
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netd.core.linkspec import Iface
from netd.kernel.rtraw import IFF_UP

IFA_F_NODAD = 0x02
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3  # what iproute2 and pyroute2 use for routes added by hand
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def add_address(index: int, iface: Iface) -> Any:
    """RTM_NEWADDR, create-exclusive (EEXIST when present); IPv6 without duplicate address detection."""
    msg = ifaddrmsg()
    msg["family"] = _family(iface.version)
    msg["prefixlen"] = iface.network.prefixlen
    msg["index"] = index
    msg["flags"] = IFA_F_NODAD if iface.version == 6 else 0
    address = str(iface.ip)
    msg["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
    msg["header"]["type"] = RTM_NEWADDR
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return msg


def set_up(index: int, alias: str | None = None) -> Any:
    """IFF_UP, and with ``alias`` the interface alias (netd's ownership marker) in the same request."""
    msg = ifinfmsg()
    msg["index"] = index
    msg["flags"] = IFF_UP
    msg["change"] = IFF_UP
    if alias is not None:
        msg["attrs"] = [("IFLA_IFALIAS", alias)]
    msg["header"]["type"] = RTM_NEWLINK
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    return msg


def replace_default_route(index: int, gateway: IPv4Address | IPv6Address) -> Any:
    msg = rtmsg()
    msg["family"] = _family(gateway.version)
    msg["dst_len"] = 0
    msg["table"] = RT_TABLE_MAIN
    msg["proto"] = RTPROT_BOOT
    msg["scope"] = RT_SCOPE_UNIVERSE
    msg["type"] = RTN_UNICAST
    msg["attrs"] = [("RTA_GATEWAY", str(gateway)), ("RTA_OIF", index)]
    msg["header"]["type"] = RTM_NEWROUTE
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    return msg


async def run(ipr: Any, msgs: Sequence[Any]) -> list[NetlinkError | None]:
    """Send ``msgs`` in one datagram on ``ipr`` (an AsyncIPRoute); the error of each (None: acked)."""
    requests: list[NetlinkRequest] = []
    data = bytearray()
    try:
        for msg in msgs:
            request = NetlinkRequest(ipr, msg)  # takes a sequence number
            await request.prepare()  # encodes; opens the sequence number's answer queue
            requests.append(request)
            data += request.msg.data
        ipr.send(bytes(data))
    except BaseException:
        for request in requests:
            request.cleanup()
        raise
    out: list[NetlinkError | None] = []
    for request in requests:
        try:
            async for _ in request.response():  # frees the sequence number and the queue when done
                pass
            out.append(None)
        except NetlinkError as exc:
            out.append(exc)
    return out
