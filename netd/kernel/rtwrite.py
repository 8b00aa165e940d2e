"""Raw rtnetlink requests for a connect's writes (the veth create, the namespace side, the host side up).

pyroute2 spends ~0.3-1.5 ms of Python per request (encoding every attribute through its message classes,
request bookkeeping, decoding the ack); a connect made five of them.  These builders pack the few attributes
netd sends with ``struct``; :func:`transact` sends several in one datagram on a blocking socket and returns the
error of each (the kernel handles them in order).  Pure except ``transact``.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from netd.core.linkspec import Iface
from netd.kernel.rtraw import (
    IFADDR,
    IFF_UP,
    IFINFO,
    IFLA_ADDRESS,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MASTER,
    IFLA_MTU,
    NLATTR,
    NLM_F_REQUEST,
    NLMSG,
    NLMSG_ERROR,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RawLink,
    decode_link,
    messages,
)

NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_NEWROUTE = 24
IFLA_NET_NS_FD = 28
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
RTA_OIF, RTA_GATEWAY = 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_U32 = struct.Struct("=I")

# (type, flags, body): one request, its header made by ``transact`` (which numbers them)
Request = tuple[int, int, bytes]


def attr(atype: int, value: bytes) -> bytes:
    out = NLATTR.pack(NLATTR.size + len(value), atype) + value
    return out + b"\0" * (-len(out) % 4)


def _text(value: str) -> bytes:
    return value.encode() + b"\0"


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def new_veth(ifname: str, peer: str, netns_fd: int, master: int, peer_mac: str, mtu: int | None = None) -> Request:
    """Create-exclusive a veth on ``master`` whose peer is made directly in the namespace ``netns_fd``."""
    peer_body = IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _text(peer))
    peer_body += attr(IFLA_NET_NS_FD, _U32.pack(netns_fd)) + attr(IFLA_ADDRESS, _mac(peer_mac))
    body = IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _text(ifname)) + attr(IFLA_MASTER, _U32.pack(master))
    if mtu:
        peer_body += attr(IFLA_MTU, _U32.pack(mtu))
        body += attr(IFLA_MTU, _U32.pack(mtu))
    info = attr(IFLA_INFO_KIND, _text("veth")) + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_body))
    return RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body + attr(IFLA_LINKINFO, info)


def set_up(index: int, alias: str | None = None) -> Request:
    """IFF_UP, and with ``alias`` the interface alias (netd's ownership marker) in the same request."""
    body = IFINFO.pack(0, 0, index, IFF_UP, IFF_UP)
    if alias is not None:
        body += attr(IFLA_IFALIAS, _text(alias))
    return RTM_NEWLINK, NLM_F_ACK, body


IFLA_AF_SPEC = 26
IFLA_INET6_ADDR_GEN_MODE = 8
IN6_ADDR_GEN_MODE_NONE = 1


def no_ipv6_addresses(index: int) -> Request:
    """IPv6 address generation off (IFLA_INET6_ADDR_GEN_MODE none), for a link still down: once up it has no
    link-local address, so it sends no DAD, MLD report or router solicitation, which a bridge floods to every
    port.  Sent before the link's up.  Not the disable_ipv6 sysctl: that write takes the interface's IPv6 down
    under the rtnl lock, 0.1 ms growing to 0.7-1.1 ms with 1000 namespaces (measured); this is one attribute.
    An address netd adds later (a reload that gives the network IPv6) still works.  Fails with EAFNOSUPPORT
    on a kernel booted without IPv6 (harmless)."""
    inner = attr(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))
    body = IFINFO.pack(0, 0, index, 0, 0) + attr(IFLA_AF_SPEC, attr(socket.AF_INET6, inner))
    return RTM_NEWLINK, NLM_F_ACK, body


def add_address(index: int, iface: Iface) -> Request:
    """Create-exclusive (EEXIST when present); IPv6 without duplicate address detection."""
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    flags = IFA_F_NODAD if iface.version == 6 else 0
    raw = iface.ip.packed
    body = IFADDR.pack(family, iface.network.prefixlen, flags, 0, index) + attr(IFA_LOCAL, raw)
    return RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body + attr(IFA_ADDRESS, raw)


def replace_default_route(index: int, gateway: IPv4Address | IPv6Address) -> Request:
    family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
    body = RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    body += attr(RTA_GATEWAY, gateway.packed) + attr(RTA_OIF, _U32.pack(index))
    return RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body


def get_link(ifname: str) -> Request:
    """RTM_GETLINK by name (its answer is a message, not an ack).  Besides reading, it syncs the device's
    pending link-watch work (operstate, qdisc activation) in the kernel."""
    return RTM_GETLINK, 0, IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _text(ifname))


def del_link(ifname: str) -> Request:
    return RTM_DELLINK, NLM_F_ACK, IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, _text(ifname))


def frame(req: Request, seq: int) -> bytes:
    """The request as one netlink message numbered ``seq`` (for ``RouteSocket.ask``)."""
    mtype, flags, body = req
    return NLMSG.pack(NLMSG.size + len(body), mtype, flags | NLM_F_REQUEST, seq, 0) + body


def transact(sock: socket.socket, requests: Sequence[Request], seq0: int = 1) -> list[OSError | None]:
    """Send ``requests`` in one datagram on a blocking NETLINK_ROUTE socket; the error of each (None: acked or
    answered).  The kernel stops at nothing: every request gets its own answer."""
    return [err for err, _answer in exchange(sock, requests, seq0)]


def exchange(
    sock: socket.socket, requests: Sequence[Request], seq0: int = 1
) -> list[tuple[OSError | None, RawLink | None]]:
    """As ``transact``, with each answer's link decoded when it is an RTM_NEWLINK (a get's answer)."""
    sock.send(b"".join(frame(req, seq0 + i) for i, req in enumerate(requests)))
    out: dict[int, tuple[OSError | None, RawLink | None]] = {}
    while len(out) < len(requests):
        buf = sock.recv(1 << 16)
        for msg in messages(buf):
            i = msg.seq - seq0
            if not 0 <= i < len(requests) or i in out:
                continue  # a get's ack after its answer
            if msg.type == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", buf, msg.start)
                out[i] = (OSError(-err, os.strerror(-err)) if err else None, None)
            elif msg.type == RTM_NEWLINK:
                out[i] = (None, decode_link(buf, msg.start, msg.end))
            else:
                out[i] = (None, None)
    return [out[i] for i in range(len(requests))]


def route_socket() -> socket.socket:
    """A blocking NETLINK_ROUTE socket in the calling thread's namespace (timeout: a stuck kernel is an error)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    sock.settimeout(10.0)
    return sock


def is_eexist(err: OSError | None) -> bool:
    return err is not None and err.errno == errno.EEXIST
