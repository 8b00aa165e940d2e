"""The macvlan driver (pure): options, the endpoint's child spec, the host_access shim."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address, ip_interface

from netd.errors import InvalidError
from netd.linkspec import ChildSpec, Iface, NsRef, ShimSpec
from netd.model import Endpoint, IPAddress, IpamConfig, Network
from netd.naming import mac_for

from .base import OPT_HOST_ACCESS, OPT_PARENT, LinkOptions, choice, flag_option

OPT_MODE = "macvlan_mode"
MODES = ("bridge", "private", "vepa", "passthru")
HOST_ACCESS_AUX = "netd-host-access"  # the aux-address name that reserves the shim's address


def shim_name(net_id: str) -> str:
    return "mvh-" + net_id[:11]


class Macvlan:
    name: str = "macvlan"
    options: tuple[str, ...] = (OPT_PARENT, OPT_MODE, OPT_HOST_ACCESS)

    def parse_options(self, options: Mapping[str, str]) -> LinkOptions:
        mode = choice(options, OPT_MODE, MODES, "bridge")
        host_access = flag_option(options, OPT_HOST_ACCESS)
        if host_access and mode == "passthru":
            raise InvalidError(
                "host_access=true needs a shim macvlan beside the endpoints; passthru allows only one macvlan "
                "on the parent: use macvlan_mode=bridge",
                field=OPT_HOST_ACCESS,
            )
        return LinkOptions(parent=options.get(OPT_PARENT) or None, mode=mode, host_access=host_access)

    def endpoint_mac(self, net: Network, ep_id: str) -> str:
        return "" if net.mode == "passthru" else mac_for(ep_id)  # passthru keeps the parent's address

    def build_child_spec(self, ep: Endpoint, net: Network, ns_path: str) -> ChildSpec:
        gw4, gw6 = gateways(ep, net)
        assert net.parent is not None
        return ChildSpec(
            kind="macvlan",
            owner=ep.id,
            parent=net.parent.ifname,
            mode=net.mode or "bridge",
            flag=None,
            netns=NsRef(ns_path),
            peer_ifname=ep.ifname,
            mac=ep.mac or None,
            mtu=net.mtu,
            addresses=tuple(a for a in (ep.ipv4, ep.ipv6) if a is not None),
            gateway4=gw4,
            gateway6=gw6,
        )


def gateways(ep: Endpoint, net: Network) -> tuple[IPv4Address | None, IPv6Address | None]:
    """The default routes of an endpoint that carries them (the physical network's router, --gateway)."""
    if not ep.default_route or net.internal:
        return None, None
    p4, p6 = net.pool(4), net.pool(6)
    gw4 = p4.gateway if p4 is not None and isinstance(p4.gateway, IPv4Address) else None
    gw6 = p6.gateway if p6 is not None and isinstance(p6.gateway, IPv6Address) else None
    return gw4, gw6


def host_access_address(pool: IpamConfig) -> IPAddress:
    """The shim's address: the highest free one of the subnet, outside the ip-range when there is one."""
    reserved = {pool.subnet.network_address, pool.gateway, *pool.aux_addresses.values()}
    if pool.subnet.version == 4:
        reserved.add(pool.subnet.broadcast_address)
    top = int(pool.subnet.broadcast_address)
    bottom = int(pool.subnet.network_address)
    make = IPv4Address if pool.subnet.version == 4 else IPv6Address
    fallback: IPAddress | None = None
    for i in range(top, max(bottom, top - 4096), -1):
        addr = make(i)
        if addr in reserved:
            continue
        if pool.ip_range is None or addr not in pool.ip_range:
            return addr
        fallback = fallback or addr
    if fallback is None:
        raise InvalidError(f"host_access: no free address left in {pool.subnet} for the host", field="subnet")
    return fallback


def build_shim_spec(net: Network) -> ShimSpec | None:
    if not net.host_access or net.parent is None:
        return None
    addrs: list[Iface] = []
    routes = []
    for cfg in net.ipam:
        addr = cfg.aux_addresses.get(HOST_ACCESS_AUX)
        if addr is None:
            continue
        addrs.append(ip_interface(f"{addr}/{addr.max_prefixlen}"))
        routes.append(cfg.ip_range or cfg.subnet)
    if not addrs:
        return None
    return ShimSpec(
        ifname=shim_name(net.id), owner=net.id, parent=net.parent.ifname, address=addrs[0], routes=tuple(routes)
    )


MACVLAN = Macvlan()
