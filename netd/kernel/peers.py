"""An endpoint's interface seen from inside its namespace (link, addresses, default routes: CNI's CHECK), and
set again when it drifted.

Read on full passes and ``check`` (and for the endpoints a change hands the default route to), never on a
connect: one thread for the whole pass walks the namespaces (setns into each in turn) with a raw netlink socket
per namespace; the event loop only waits for it.  ~0.2 ms per endpoint (bench/full_pass.py)."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Mapping
from ipaddress import ip_address
from typing import Any

import structlog
from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError
from netd.core.linkspec import Iface, ObservedPeer, VethSpec
from netd.kernel.link import configure_peer, get_link
from netd.kernel.netns import ns_alive, setns_net
from netd.kernel.nlerror import kernel_error
from netd.kernel.observe import decode_link, observed_link
from netd.kernel.rtraw import (
    NETLINK_ROUTE,
    NLM_F_DUMP,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_GETADDR,
    Message,
    attrs,
    dump_request,
    error_of,
    get_link_request,
    messages,
    request,
)
from netd.kernel.rtraw import decode_addr as decode_raw_addr
from netd.kernel.rtraw import decode_link as decode_raw_link
from netd.kernel.rtsock import NETLINK_GET_STRICT_CHK, RECV_SIZE, SOL_NETLINK

log = structlog.get_logger()

IPR = Any
RTM_GETROUTE = 26
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTA_OIF, RTA_GATEWAY, RTA_TABLE = 4, 5, 15
RT_TABLE_MAIN = 254


def _ask(sock: socket.socket, req: bytes, seq: int, what: str) -> list[tuple[Message, bytes]]:
    """One request on a blocking raw socket; its answer's messages (an error raises OSError)."""
    sock.sendall(req)
    out: list[tuple[Message, bytes]] = []
    while True:
        data = sock.recv(RECV_SIZE)
        for msg in messages(data):
            if msg.seq != seq:
                continue
            if msg.type == NLMSG_ERROR:
                err = error_of(data, msg.start, what)
                if err is not None:
                    raise err
                return out
            if msg.type == NLMSG_DONE:
                return out
            out.append((msg, data))
            if not msg.flags & NLM_F_MULTI:
                return out


def _default_gateway(sock: socket.socket, family: int, index: int, seq: int) -> str | None:
    """The gateway of the main table's default route through ``index`` ("" without one), None: no such route."""
    body = RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, 0, 0, 0, 0)
    for msg, data in _ask(sock, request(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, body), seq, "route dump"):
        _fam, dst_len, _src, _tos, table, _proto, _scope, _type, _flags = RTMSG.unpack_from(data, msg.start)
        if dst_len != 0:
            continue
        oif = gateway = None
        for atype, vpos, vend in attrs(data, msg.start + RTMSG.size, msg.end):
            if atype == RTA_OIF and vend - vpos >= 4:
                oif = struct.unpack_from("=I", data, vpos)[0]
            elif atype == RTA_GATEWAY:
                gateway = str(ip_address(data[vpos:vend]))
            elif atype == RTA_TABLE and vend - vpos >= 4:
                table = struct.unpack_from("=I", data, vpos)[0]
        if oif == index and table == RT_TABLE_MAIN:
            return gateway or ""
    return None


def read_peer(ifname: str) -> ObservedPeer | None:
    """The calling thread's namespace: one link get, one address dump filtered by index in the kernel, one route
    dump per family.  Raw netlink (``rtraw``): no pyroute2 decoding, no event loop round trips."""
    flags = socket.SOCK_RAW | socket.SOCK_CLOEXEC
    with socket.socket(socket.AF_NETLINK, flags, NETLINK_ROUTE) as sock:
        sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        sock.bind((0, 0))
        try:
            got = _ask(sock, get_link_request(1, ifname), 1, f"link {ifname}")
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        if not got:
            return None
        msg, data = got[0]
        raw = decode_raw_link(data, msg.start, msg.end)
        addrs: list[Iface] = []
        for amsg, adata in _ask(sock, dump_request(RTM_GETADDR, 2, raw.index), 2, "address dump"):
            found = decode_raw_addr(adata, amsg.start, amsg.end)
            if found is not None and found[0] == raw.index and found[1] is not None:
                addrs.append(found[1])
        gw4 = _default_gateway(sock, socket.AF_INET, raw.index, 3)
        try:
            gw6 = _default_gateway(sock, socket.AF_INET6, raw.index, 4)
        except OSError as exc:
            if exc.errno != errno.EAFNOSUPPORT:
                raise
            gw6 = None
        return ObservedPeer(observed_link(raw, tuple(addrs)), gateway4=gw4, gateway6=gw6)


def read_peers(peers: Mapping[str, tuple[str, str]]) -> dict[str, ObservedPeer]:
    """Blocking, in a fresh thread only (it setns()es into each namespace in turn): by endpoint id; a
    namespace that is gone or has no such interface gives no entry."""
    out: dict[str, ObservedPeer] = {}
    for ep_id, (path, ifname) in peers.items():
        if not ns_alive(path):
            continue
        try:
            setns_net(path)
        except OSError:
            continue  # gone meanwhile
        seen = read_peer(ifname)
        if seen is not None:
            out[ep_id] = seen
    return out


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
