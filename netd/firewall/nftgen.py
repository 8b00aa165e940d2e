"""The nf_tables generation id: one netlink round trip that says whether anyone changed the ruleset.

Every committed nf_tables transaction (``nft``, libnftables, iptables-nft, firewalld, netd's own writes) moves
the namespace's generation by one.  The firewall check reads it (``NFT_MSG_GETGEN`` over a
``NETLINK_NETFILTER`` socket, framed here: a 16-byte header, a 4-byte ``nfgenmsg`` and the ``NFTA_GEN_ID``
attribute back) and lists and compares netd's tables only when it moved since netd last knew them in sync,
instead of listing a table of thousands of map elements every second.

A socket is bound to the network namespace of the thread that opens it; each backend opens it in the thread
that also talks to the firewall (the daemon's namespace).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2
_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id (big endian in the kernel, unused here)
_ATTR = struct.Struct("=HH")
TIMEOUT = 1.0  # the kernel answers within the send; a socket that does not is given up (full comparisons)


class GenReader:
    """Reads the generation id; ``None`` when nf_tables cannot be asked (no netlink family, a closed socket):
    callers then compare the whole table as before."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = itertools.count(1)
        self._broken = False

    def read(self) -> int | None:
        if self._broken:
            return None
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
                self._sock.settimeout(TIMEOUT)  # the iptables backend asks from the event loop's thread
                self._sock.bind((0, 0))
            return self._ask(self._sock)
        except OSError:
            self.close()
            self._broken = True  # say it once; the full comparison works without
            return None

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _ask(self, sock: socket.socket) -> int | None:
        seq = next(self._seq) & 0xFFFFFFFF
        body = _NFGEN.pack(socket.AF_UNSPEC, 0, 0)
        msg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
        sock.send(_HDR.pack(_HDR.size + len(body), msg_type, NLM_F_REQUEST, seq, 0) + body)
        while True:
            data = sock.recv(4096)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, mtype, _flags, mseq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    return None
                if mseq == seq:
                    if mtype == NLMSG_ERROR:
                        (errno,) = struct.unpack_from("=i", data, offset + _HDR.size)
                        raise OSError(-errno, "NFT_MSG_GETGEN refused")
                    if mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
                        return _gen_id(data[offset + _HDR.size + _NFGEN.size : offset + length])
                offset += (length + 3) & ~3


def _gen_id(attrs: bytes) -> int | None:
    offset = 0
    while offset + _ATTR.size <= len(attrs):
        alen, atype = _ATTR.unpack_from(attrs, offset)
        if alen < _ATTR.size:
            return None
        if atype & 0x3FFF == NFTA_GEN_ID and alen >= _ATTR.size + 4:
            return int(struct.unpack_from(">I", attrs, offset + _ATTR.size)[0])
        offset += (alen + 3) & ~3
    return None
