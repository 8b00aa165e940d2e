"""Raw rtnetlink framing for the two hot readers that skip pyroute2's decoder (events, interface counters).

pyroute2 decodes every attribute of every message (~0.3 ms for one RTM_NEWLINK); these readers need two or
three fields, read here with ``struct.unpack_from``.  Pure: bytes in, tuples out.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_address, ip_interface
from typing import NamedTuple

from netd.core.linkspec import Iface

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3

NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, pid
NLATTR = struct.Struct("=HH")  # length, type
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


def request(mtype: int, flags: int, seq: int, body: bytes) -> bytes:
    return NLMSG.pack(NLMSG.size + len(body), mtype, flags, seq, 0) + body


class Message(NamedTuple):
    type: int
    flags: int
    seq: int
    pid: int
    start: int  # of the payload
    end: int


def messages(data: bytes) -> Iterator[Message]:
    """Each message of one datagram."""
    pos = 0
    while pos + NLMSG.size <= len(data):
        length, mtype, flags, seq, pid = NLMSG.unpack_from(data, pos)
        if length < NLMSG.size or pos + length > len(data):
            raise OSError("netlink: malformed message")
        yield Message(mtype, flags, seq, pid, pos + NLMSG.size, pos + length)
        pos += (length + 3) & ~3


def attrs(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, value start, value end) of each attribute between ``pos`` and ``end``."""
    while pos + NLATTR.size <= end:
        alen, atype = NLATTR.unpack_from(data, pos)
        if alen < NLATTR.size:
            return
        yield atype & NLA_TYPE_MASK, pos + NLATTR.size, min(pos + alen, end)
        pos += (alen + 3) & ~3


def error_of(data: bytes, pos: int, what: str) -> OSError | None:
    """The error an NLMSG_ERROR payload carries (None for an ack)."""
    (err,) = struct.unpack_from("=i", data, pos)
    return OSError(-err, f"{what}: {os.strerror(-err)}") if err else None


# -- RTM_NEWLINK / RTM_NEWADDR -------------------------------------------------------------------------------

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS = 1, 3, 4, 5, 10, 18, 20
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VLAN_ID = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
RT_SCOPE_LINK = 253

IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")


def _text(data: bytes, pos: int, end: int) -> str:
    return data[pos:end].split(b"\0", 1)[0].decode(errors="replace")


@dataclass(frozen=True, slots=True)
class RawLink:
    """The fields of an RTM_NEWLINK netd reads (decode_link turns it into an ObservedLink)."""

    index: int
    ifname: str
    flags: int
    kind: str  # IFLA_INFO_KIND, "" if none
    alias: str | None
    mtu: int
    master: int | None
    mac: str  # "02:42:ac:11:00:02", "" if none
    link_index: int | None
    vlan_id: int | None


def decode_link(data: bytes, pos: int, end: int) -> RawLink:
    _family, _type, index, flags, _change = IFINFO.unpack_from(data, pos)
    ifname = kind = mac = ""
    alias: str | None = None
    mtu = 0
    master = link_index = vlan_id = None
    for atype, vpos, vend in attrs(data, pos + IFINFO.size, end):
        if atype == IFLA_IFNAME:
            ifname = _text(data, vpos, vend)
        elif atype == IFLA_MTU and vend - vpos >= 4:
            mtu = _U32.unpack_from(data, vpos)[0]
        elif atype == IFLA_MASTER and vend - vpos >= 4:
            master = _U32.unpack_from(data, vpos)[0] or None
        elif atype == IFLA_LINK and vend - vpos >= 4:
            link_index = _U32.unpack_from(data, vpos)[0] or None
        elif atype == IFLA_IFALIAS:
            alias = _text(data, vpos, vend) or None
        elif atype == IFLA_ADDRESS:
            mac = ":".join(f"{b:02x}" for b in data[vpos:vend])
        elif atype == IFLA_LINKINFO:
            for itype, ipos, iend in attrs(data, vpos, vend):
                if itype == IFLA_INFO_KIND:
                    kind = _text(data, ipos, iend)
                elif itype == IFLA_INFO_DATA:
                    for dtype, dpos, dend in attrs(data, ipos, iend):
                        if dtype == IFLA_VLAN_ID and dend - dpos >= 2:
                            vlan_id = _U16.unpack_from(data, dpos)[0]
    if kind != "vlan":
        vlan_id = None  # attribute 1 of another kind's data means something else
    return RawLink(index, ifname, flags, kind, alias, mtu, master, mac, link_index, vlan_id)


def decode_addr(data: bytes, pos: int, end: int) -> tuple[int, Iface | None] | None:
    """(ifindex, address) of an RTM_NEWADDR/RTM_DELADDR; the address is None for an IPv6 link-local one (the
    kernel's, not netd's); None for other families."""
    family, prefixlen, _flags, scope, index = IFADDR.unpack_from(data, pos)
    size = {socket.AF_INET: 4, socket.AF_INET6: 16}.get(family)
    if size is None:
        return None
    if family == socket.AF_INET6 and scope == RT_SCOPE_LINK:
        return index, None
    found: dict[int, bytes] = {}
    for atype, vpos, vend in attrs(data, pos + IFADDR.size, end):
        if atype in (IFA_ADDRESS, IFA_LOCAL) and vend - vpos == size:
            found[atype] = data[vpos:vend]
    raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)  # IPv4 point-to-point: IFA_LOCAL is ours
    if raw is None:
        return None
    return index, ip_interface(f"{ip_address(raw)}/{prefixlen}")


def get_link_request(seq: int, ifname: str) -> bytes:
    name = ifname.encode() + b"\0"
    attr = NLATTR.pack(NLATTR.size + len(name), IFLA_IFNAME) + name
    attr += b"\0" * (-len(attr) % 4)
    return request(RTM_GETLINK, NLM_F_REQUEST, seq, IFINFO.pack(0, 0, 0, 0, 0) + attr)


def dump_request(mtype: int, seq: int, index: int = 0) -> bytes:
    """A link or address dump; ``index`` (addresses, with NETLINK_GET_STRICT_CHK on) filters in the kernel."""
    if mtype == RTM_GETADDR:
        return request(mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, IFADDR.pack(0, 0, 0, 0, index))
    return request(mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, IFINFO.pack(0, 0, 0, 0, 0))
