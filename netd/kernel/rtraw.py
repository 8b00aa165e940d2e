"""Raw rtnetlink framing for the two hot readers that skip pyroute2's decoder (events, interface counters).

pyroute2 decodes every attribute of every message (~0.3 ms for one RTM_NEWLINK); these readers need two or
three fields, read here with ``struct.unpack_from``.  Pure: bytes in, tuples out.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

NETLINK_ROUTE = 0
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3

NLMSG = struct.Struct("=IHHII")  # length, type, flags, seq, pid
NLATTR = struct.Struct("=HH")  # length, type
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


def request(mtype: int, flags: int, seq: int, body: bytes) -> bytes:
    return NLMSG.pack(NLMSG.size + len(body), mtype, flags, seq, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, seq, pid, payload start, end) of each message in one datagram."""
    pos = 0
    while pos + NLMSG.size <= len(data):
        length, mtype, _flags, seq, pid = NLMSG.unpack_from(data, pos)
        if length < NLMSG.size or pos + length > len(data):
            raise OSError("netlink: malformed message")
        yield mtype, seq, pid, pos + NLMSG.size, pos + length
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
