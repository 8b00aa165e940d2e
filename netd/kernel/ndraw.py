"""Raw rtnetlink framing for the neighbour and FDB entries of one device: dumps (RTM_GETNEIGH) decoded into the
pure entry types of :mod:`netd.core.vxlanspec`, and the replace/delete requests.

A VXLAN device of an overlay network carries an FDB entry and one or two neighbour entries per remote endpoint
(thousands).  pyroute2 decodes every attribute of every message, this reads the three netd needs; and writing
through pyroute2 cost ~0.55 ms of Python per entry even batched, ~37 us raw (bench/vxlan_entries.py).  The
dumps ask the kernel to filter by device (NDA_IFINDEX; the RouteSocket turns strict checking on).  Pure: bytes
in, values out.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import ip_address

from netd.core.vxlanspec import Addr, FdbEntry, NeighEntry
from netd.kernel.rtraw import NLATTR, NLM_F_DUMP, NLM_F_REQUEST, attrs, request

RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
NTF_SELF = 0x02
NUD_PERMANENT = 0x80
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_U32 = struct.Struct("=I")


def dump_request(seq: int, family: int, ifindex: int) -> bytes:
    """Every neighbour (``family`` AF_INET/AF_INET6) or FDB (AF_BRIDGE) entry of the device ``ifindex``.

    With strict checking the kernel wants the device as NDA_IFINDEX and a zero ``ndm_ifindex``."""
    attr = NLATTR.pack(NLATTR.size + 4, NDA_IFINDEX) + _U32.pack(ifindex)
    return request(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, NDMSG.pack(family, 0, 0, 0, 0) + attr)


def _fields(data: bytes, pos: int, end: int) -> tuple[int, int, int, int, bytes | None, bytes | None]:
    family, index, state, flags, _type = NDMSG.unpack_from(data, pos)
    dst = mac = None
    for atype, vpos, vend in attrs(data, pos + NDMSG.size, end):
        if atype == NDA_DST:
            dst = data[vpos:vend]
        elif atype == NDA_LLADDR:
            mac = data[vpos:vend]
    return family, index, state, flags, dst, mac


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def decode_fdb(data: bytes, pos: int, end: int, ifindex: int) -> FdbEntry | None:
    """The entry of the device's own FDB (NTF_SELF); None for the bridge's view of the port (NTF_MASTER: the
    MACs the bridge learned on it, the port's own address) and for other devices."""
    family, index, state, flags, dst, mac = _fields(data, pos, end)
    if family != socket.AF_BRIDGE or index != ifindex or not flags & NTF_SELF or mac is None or len(mac) != 6:
        return None
    remote = ip_address(dst) if dst is not None and len(dst) in (4, 16) else None
    return FdbEntry(_mac(mac), remote, bool(state & NUD_PERMANENT))


def decode_neigh(data: bytes, pos: int, end: int, ifindex: int) -> NeighEntry | None:
    """A neighbour entry of the device with a link-layer address (None for one still being resolved and for
    multicast addresses)."""
    family, index, state, _flags, dst, mac = _fields(data, pos, end)
    size = {int(socket.AF_INET): 4, int(socket.AF_INET6): 16}.get(family)
    if index != ifindex or dst is None or len(dst) != size or mac is None or len(mac) != 6:
        return None
    ip = ip_address(dst)
    if ip.is_multicast:  # the kernel's own (IPv6 link-local multicast groups of the device), never netd's
        return None
    return NeighEntry(ip, _mac(mac), bool(state & NUD_PERMANENT))


# -- writes: one datagram carries many requests, each acked (see netd.kernel.vxlan.write_entries) ------------

NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x4, 0x100, 0x400
RTN_UNICAST = 1


def _attr(atype: int, value: bytes) -> bytes:
    out = NLATTR.pack(NLATTR.size + len(value), atype) + value
    return out + b"\0" * (-len(out) % 4)


def _family(ip: Addr) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def fdb_put(seq: int, ifindex: int, e: FdbEntry) -> bytes:
    """Replace-or-create the device's own (NTF_SELF) permanent entry "MAC -> remote node"."""
    assert e.dst is not None
    body = NDMSG.pack(socket.AF_BRIDGE, ifindex, NUD_PERMANENT, NTF_SELF, 0)
    body += _attr(NDA_LLADDR, bytes.fromhex(e.mac.replace(":", ""))) + _attr(NDA_DST, e.dst.packed)
    return request(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq, body)


def fdb_del(seq: int, ifindex: int, mac: str) -> bytes:
    """Delete the device's whole entry for ``mac`` (every remote of it)."""
    body = NDMSG.pack(socket.AF_BRIDGE, ifindex, 0, NTF_SELF, 0) + _attr(
        NDA_LLADDR, bytes.fromhex(mac.replace(":", ""))
    )
    return request(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def neigh_put(seq: int, ifindex: int, e: NeighEntry) -> bytes:
    body = NDMSG.pack(_family(e.ip), ifindex, NUD_PERMANENT, 0, RTN_UNICAST)
    body += _attr(NDA_DST, e.ip.packed) + _attr(NDA_LLADDR, bytes.fromhex(e.mac.replace(":", "")))
    return request(RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq, body)


def neigh_del(seq: int, ifindex: int, ip: Addr) -> bytes:
    body = NDMSG.pack(_family(ip), ifindex, 0, 0, 0) + _attr(NDA_DST, ip.packed)
    return request(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, seq, body)
