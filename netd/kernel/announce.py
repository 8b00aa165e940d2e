"""Announce a new endpoint's addresses on its link: a gratuitous ARP per IPv4 address, an unsolicited neighbour
advertisement (override flag) per IPv6 address, sent from inside the endpoint's namespace.

Peers and the host that cached another MAC for a reused address (a namespace removed and another connected
with the same address) update their entry at once instead of black-holing traffic until it ages out (RFC 5227
section 3 / RFC 4861 section 7.2.6).  The kernel's own ``arp_notify`` does not help here: it announces when the
endpoint's side comes up, and a veth peer comes up before its host side, which drops the announcement.

Sent from a short-lived thread that setns()es (never the event loop's or a pooled thread); best effort: a
failure is logged, the endpoint works without it (only slower to be found after a reuse).

Two details keep it off a connect's critical path and make it arrive:

* closing an AF_PACKET socket waits for an RCU grace period (``packet_release`` calls ``synchronize_net``:
  ~13 ms here, most of a connect before this): the thread hands the result back as soon as the frames are
  sent, and closes its sockets afterwards, while the connect is answered;
* the frames are sent once both sides are up *and* the kernel has run the link-watch work of the two devices
  (carrier on -> the peer's qdisc activated, the bridge port forwarding): until then the peer drops what it
  sends.  An RTM_GETLINK of a device syncs that work first, so the thread reads both links before it sends.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
from collections.abc import Sequence
from ipaddress import IPv4Interface, IPv6Interface

import structlog

from netd.kernel.netns import in_fresh_thread, setns_net
from netd.kernel.rtraw import NETLINK_ROUTE, get_link_request

log = structlog.get_logger()

ETH_P_ARP = 0x0806
SIOCGIFHWADDR = 0x8927
ARPOP_REQUEST = 1
ND_NEIGHBOR_ADVERT = 136
ND_NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LLADDR = 2
ALL_NODES = "ff02::1"


def garp(mac: bytes, addr: bytes) -> bytes:
    """A gratuitous ARP request (sender = target = the address), as the kernel's own ``arp_notify`` sends."""
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, ARPOP_REQUEST, mac, addr, b"\0" * 6, addr)


def unsolicited_na(mac: bytes, addr: bytes) -> bytes:
    """ICMPv6 neighbour advertisement, override set, with the target link-layer address option (the kernel
    fills in the checksum of a raw ICMPv6 socket)."""
    return struct.pack(
        "!BBHI16sBB6s", ND_NEIGHBOR_ADVERT, 0, 0, ND_NA_FLAG_OVERRIDE, addr, ND_OPT_TARGET_LLADDR, 1, mac
    )


def sync_link(ifname: str) -> None:
    """RTM_GETLINK of ``ifname`` in the calling thread's namespace: the kernel first runs the device's pending
    link-watch work (operstate, qdisc activation), so frames sent after it are not dropped.  Best effort."""
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as nl,
    ):
        nl.settimeout(1.0)
        nl.send(get_link_request(1, ifname))
        nl.recv(1 << 16)


def send_frames(
    ifname: str, index: int, addresses: Sequence[IPv4Interface | IPv6Interface], opened: list[socket.socket]
) -> int:
    """Sends the frames on ``ifname`` (``index``) of the calling thread's namespace; the sockets it opens go to
    ``opened`` for the caller to close (slowly: RCU) later.  Returns the number of frames sent."""
    sent = 0
    # protocol 0: no receive hook (the socket only sends; each frame names its protocol)
    pkt = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    opened.append(pkt)
    info = fcntl.ioctl(pkt.fileno(), SIOCGIFHWADDR, struct.pack("256s", ifname.encode()))
    mac = info[18:24]
    for iface in addresses:
        if isinstance(iface, IPv4Interface):
            pkt.sendto(garp(mac, iface.ip.packed), (ifname, ETH_P_ARP, 0, 0, b"\xff" * 6))
            sent += 1
    for iface in addresses:
        if not isinstance(iface, IPv6Interface):
            continue
        icmp = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        opened.append(icmp)
        icmp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # RFC 4861: hop limit 255
        icmp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        icmp.bind((str(iface.ip), 0, 0, index))
        icmp.sendto(unsolicited_na(mac, iface.ip.packed), (ALL_NODES, 0, 0, index))
        sent += 1
    return sent


def _send(
    ns_path: str,
    ifname: str,
    addresses: Sequence[IPv4Interface | IPv6Interface],
    host_ifname: str | None,
    opened: list[socket.socket],
) -> int:
    if host_ifname is not None:
        sync_link(host_ifname)  # still in netd's namespace: the host side (the bridge port's state)
    setns_net(ns_path)  # this thread only; it ends right after
    sync_link(ifname)
    return send_frames(ifname, socket.if_nametoindex(ifname), addresses, opened)


def _close_all(opened: list[socket.socket]) -> None:
    for sock in opened:  # an AF_PACKET socket's close waits for an RCU grace period
        sock.close()


async def announce(
    ns_path: str,
    ifname: str,
    addresses: Sequence[IPv4Interface | IPv6Interface],
    host_ifname: str | None = None,
) -> None:
    """Best effort, after the link is up on both sides (``host_ifname``: the host side of a veth, synced too).
    Returns once the frames are sent; the thread closes its sockets after that, off the caller's path."""
    if not addresses:
        return
    opened: list[socket.socket] = []
    try:
        sent = await in_fresh_thread(
            lambda: _send(ns_path, ifname, addresses, host_ifname, opened),
            name="netd-announce",
            after=lambda: _close_all(opened),
        )
    except OSError as exc:
        log.warning("announce_failed", netns=ns_path, ifname=ifname, error=str(exc))
        return
    log.debug("announced", netns=ns_path, ifname=ifname, sent=sent)
