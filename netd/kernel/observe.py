"""Decode RTM_NEWLINK / RTM_NEWADDR messages into the contract types of :mod:`netd.linkspec`."""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Iterable
from ipaddress import IPv4Interface, IPv6Interface, ip_interface, ip_network
from typing import Any

from netd.linkspec import Iface, ObservedHost, ObservedLink, owner_of
from netd.model import IPNetwork

IFF_UP = 0x1
RT_SCOPE_LINK = 253

Msg = Any  # a pyroute2 nlmsg (untyped)


def link_kind(msg: Msg) -> str:
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    if kind:
        return str(kind)
    return "loopback" if msg.get_attr("IFLA_IFNAME") == "lo" else "device"


def decode_link(msg: Msg, addresses: tuple[Iface, ...] = ()) -> ObservedLink:
    master = msg.get_attr("IFLA_MASTER")
    lower = msg.get_attr("IFLA_LINK")
    vlan_id = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID")
    return ObservedLink(
        index=int(msg["index"]),
        ifname=str(msg.get_attr("IFLA_IFNAME")),
        kind=link_kind(msg),
        owner=owner_of(msg.get_attr("IFLA_IFALIAS")),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        up=bool(msg["flags"] & IFF_UP),
        master=int(master) if master else None,
        mac=str(msg.get_attr("IFLA_ADDRESS") or ""),
        addresses=addresses,
        link_index=int(lower) if lower else None,
        vlan_id=int(vlan_id) if vlan_id is not None else None,
    )


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


def build_observed(links: Iterable[Msg], addrs: Iterable[Msg]) -> ObservedHost:
    by_idx = addresses_by_index(addrs)
    host = ObservedHost()
    for msg in links:
        link = decode_link(msg, tuple(by_idx.get(int(msg["index"]), ())))
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
