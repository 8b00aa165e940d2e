"""Reads of another namespace's links from netd's own, without entering it: the namespace's id as netd's
namespace knows it (``RTM_NEWNSID``/``RTM_GETNSID`` with its fd), then ``RTM_GETLINK`` with
``IFLA_TARGET_NETNSID``.  No thread (a fresh thread that setns()es cost 0.2 ms idle and 1.5-3 ms on a busy
machine, most of it the loop waiting for the thread to be scheduled), two round trips on a raw socket.

The id stays assigned until that namespace is gone (the kernel forgets it then); a veth whose peer lives there
gets one assigned anyway.
"""

from __future__ import annotations

import errno
import socket
import struct
from functools import partial

from netd.kernel.rtraw import IFINFO, IFLA_IFNAME, NLM_F_REQUEST, RTM_GETLINK, attrs, request
from netd.kernel.rtsock import RouteSocket
from netd.kernel.rtwrite import NLM_F_ACK, attr

RTM_NEWNSID, RTM_GETNSID = 88, 90
NETNSA_NSID, NETNSA_FD = 1, 3
IFLA_TARGET_NETNSID = 46
RTGEN = struct.Struct("=Bxxx")  # struct rtgenmsg, aligned
_S32 = struct.Struct("=i")


def _nsid_request(mtype: int, flags: int, nsfd: int, seq: int) -> bytes:
    body = RTGEN.pack(socket.AF_UNSPEC) + attr(NETNSA_FD, struct.pack("=I", nsfd))
    if mtype == RTM_NEWNSID:
        body += attr(NETNSA_NSID, _S32.pack(-1))  # any free id
    return request(mtype, NLM_F_REQUEST | flags, seq, body)


async def nsid_of(rs: RouteSocket, nsfd: int) -> int:
    """The id of the namespace ``nsfd`` in the socket's namespace, assigned if it has none."""
    try:
        await rs.ask(partial(_nsid_request, RTM_NEWNSID, NLM_F_ACK, nsfd), "assign a namespace id")
    except OSError as exc:
        if exc.errno != errno.EEXIST:  # EEXIST: it has one already
            raise
    answer = await rs.ask(partial(_nsid_request, RTM_GETNSID, 0, nsfd), "namespace id")
    for m, data in answer:
        for atype, pos, end in attrs(data, m.start + RTGEN.size, m.end):
            if atype == NETNSA_NSID and end - pos >= 4:
                nsid: int = _S32.unpack_from(data, pos)[0]
                if nsid >= 0:
                    return nsid
    raise OSError(errno.ENOENT, "namespace id: none assigned")


def _get_link_in(nsid: int, ifname: str, seq: int) -> bytes:
    body = IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, ifname.encode() + b"\0")
    return request(RTM_GETLINK, NLM_F_REQUEST, seq, body + attr(IFLA_TARGET_NETNSID, _S32.pack(nsid)))


async def has_link(nsfd: int, ifname: str) -> bool:
    """Whether the namespace ``nsfd`` has a link named ``ifname``; read from the calling thread's namespace."""
    with RouteSocket() as rs:
        nsid = await nsid_of(rs, nsfd)
        try:
            await rs.ask(partial(_get_link_in, nsid, ifname), f'link "{ifname}"')
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return False
            raise
    return True
