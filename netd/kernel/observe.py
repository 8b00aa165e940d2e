"""Decode RTM_NEWLINK / RTM_NEWADDR messages into the contract types of :mod:`netd.core.linkspec`.

One link decoder: a link read with pyroute2 or with the raw codec (``rtsock``) is decoded by
``rtraw.decode_link`` and turned into an ``ObservedLink`` by ``observed_link``."""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Interface, IPv6Interface, ip_interface, ip_network
from typing import Any

from netd.core.linkspec import Iface, ObservedHost, ObservedLink, owner_of
from netd.core.model import IPNetwork
from netd.kernel.rtraw import IFF_UP, NLMSG, RT_SCOPE_LINK, RawLink
from netd.kernel.rtraw import decode_link as decode_raw_link

Msg = Any  # a pyroute2 nlmsg (untyped)


def raw_of(msg: Msg) -> RawLink:
    """A pyroute2-read RTM_NEWLINK through the one link decoder (``rtraw.decode_link``): pyroute2 keeps the
    datagram and the message's offset in it, so both netlink stacks yield the same fields the same way."""
    start = int(msg.offset)
    return decode_raw_link(msg.data, start + NLMSG.size, start + int(msg["header"]["length"]))


def observed_link(raw: RawLink, addresses: tuple[Iface, ...] = ()) -> ObservedLink:
    return ObservedLink(
        index=raw.index,
        ifname=raw.ifname,
        kind=raw.kind or ("loopback" if raw.ifname == "lo" else "device"),
        owner=owner_of(raw.alias),
        mtu=raw.mtu,
        up=bool(raw.flags & IFF_UP),
        master=raw.master,
        mac=raw.mac,
        addresses=addresses,
        link_index=raw.link_index,
        vlan_id=raw.vlan_id,
    )


def decode_link(msg: Msg, addresses: tuple[Iface, ...] = ()) -> ObservedLink:
    return observed_link(raw_of(msg), addresses)


def decode_addr(msg: Msg) -> Iface | None:
    """The address of an RTM_NEWADDR, or None for kernel-made IPv6 link-local ones (not netd's business)."""
    family = msg["family"]
    if family == socket.AF_INET:
        text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    elif family == socket.AF_INET6:
        if msg["scope"] == RT_SCOPE_LINK:
            return None
        text = msg.get_attr("IFA_ADDRESS")
    else:
        return None
    if not text:
        return None
    iface = ip_interface(f"{text}/{msg['prefixlen']}")
    assert isinstance(iface, IPv4Interface | IPv6Interface)
    return iface


def addresses_by_index(msgs: Iterable[Msg]) -> dict[int, list[Iface]]:
    out: dict[int, list[Iface]] = defaultdict(list)
    for msg in msgs:
        iface = decode_addr(msg)
        if iface is not None:
            out[int(msg["index"])].append(iface)
    return out


def build_observed(links: Iterable[RawLink], addrs: Mapping[int, Sequence[Iface]]) -> ObservedHost:
    host = ObservedHost()
    for raw in links:
        link = observed_link(raw, tuple(addrs.get(raw.index, ())))
        host.by_name[link.ifname] = link
        host.by_index[link.index] = link
        if link.owner is None:
            continue
        if link.kind == "bridge":
            host.bridges[link.owner] = link
        elif link.kind == "veth":
            host.veths[link.owner] = link
    return host


RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255


def prefixes_of(routes: Iterable[Msg], addrs: Iterable[Msg]) -> list[IPNetwork]:
    """Destinations of the main table's routes (default routes excluded) and the subnets of global addresses."""
    out: set[IPNetwork] = set()
    for msg in routes:
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        dst = msg.get_attr("RTA_DST")
        if table == RT_TABLE_LOCAL or not dst or msg["dst_len"] == 0:
            continue
        if msg["family"] == socket.AF_INET6 and str(dst).lower().startswith(("fe80", "ff")):
            continue
        out.add(ip_network(f"{dst}/{msg['dst_len']}", strict=False))
    for msg in addrs:
        iface = decode_addr(msg)
        if iface is not None and not iface.ip.is_loopback:
            out.add(iface.network)
    return sorted(out, key=lambda n: (n.version, str(n)))
