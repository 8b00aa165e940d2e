"""The macvlan driver (pure): options and mode table, the endpoint's child spec, the host_access shim."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address, ip_interface

from netd.core.actions import MISSING, Action, EnsureShim, Observed
from netd.core.errors import ConflictError, InvalidError
from netd.core.linkspec import ChildSpec, Iface, NsRef, ObservedHost, ObservedLink, ShimSpec
from netd.core.model import DesiredState, Endpoint, IPAddress, IpamConfig, Network
from netd.core.naming import endpoint_mac
from netd.drivers.base import OPT_HOST_ACCESS, OPT_PARENT, DriverOptions, bool_option, choice, gateways
from netd.drivers.childlink import ChildLinkDriver, LinkOptions, child_addresses, shim_name

OPT_MODE = "macvlan_mode"
MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}  # IFLA_MACVLAN_MODE
HOST_ACCESS_AUX = "netd-host-access"  # the aux-address name that reserves the shim's address


class Macvlan(ChildLinkDriver):
    name: str = "macvlan"
    options: tuple[str, ...] = (OPT_PARENT, OPT_MODE, OPT_HOST_ACCESS)

    def parse_options(self, options: Mapping[str, str]) -> LinkOptions:
        mode = choice(options, OPT_MODE, ("bridge", "private", "vepa", "passthru"), "bridge")
        host_access = bool_option(options, OPT_HOST_ACCESS, False)
        if host_access and mode == "passthru":
            raise InvalidError(
                "host_access=true needs a shim macvlan beside the endpoints; passthru allows only one macvlan "
                "on the parent: use macvlan_mode=bridge",
                field=OPT_HOST_ACCESS,
            )
        return LinkOptions(parent=options.get(OPT_PARENT) or None, mode=mode, host_access=host_access)

    def build_network(
        self, base: Network, opts: DriverOptions, host: ObservedHost, state: DesiredState
    ) -> Network:
        net = super().build_network(base, opts, host, state)
        if not net.host_access:
            return net
        pools: list[IpamConfig] = [p.model_copy(deep=True) for p in net.ipam]
        for pool in pools:
            if HOST_ACCESS_AUX in pool.aux_addresses:
                raise ConflictError(
                    f"aux-address name {HOST_ACCESS_AUX} is reserved for host_access", field="aux-address"
                )
            pool.aux_addresses[HOST_ACCESS_AUX] = host_access_address(pool)
        return net.model_copy(update={"ipam": pools})

    def endpoint_mac(self, net: Network, ep_id: str, ipv4: IPv4Address | None) -> str:
        # passthru keeps the parent's address; the others as Docker's macvlan: from the IPv4 address
        return "" if net.mode == "passthru" else endpoint_mac(ep_id, ipv4)

    def build_child_spec(self, ep: Endpoint, net: Network, ns_path: str) -> ChildSpec:
        gw4, gw6 = gateways(ep, net)
        assert net.parent is not None
        mode = net.mode or "bridge"
        return ChildSpec(
            kind="macvlan",
            owner=ep.id,
            parent=net.parent.ifname,
            mode=mode,
            flag=None,
            netns=NsRef(ns_path),
            peer_ifname=ep.ifname,
            mac=ep.mac or None,
            mtu=net.mtu,
            addresses=child_addresses(ep),
            gateway4=gw4,
            gateway6=gw6,
            kernel_mode=MODES[mode],
        )

    def plan_network(self, net: Network, observed: Observed) -> list[Action]:
        out = super().plan_network(net, observed)
        shim = build_shim_spec(net)
        if shim is not None:
            reason = shim_drift(shim, observed.host.by_name.get(shim.ifname))
            if reason is not None:
                out.append(EnsureShim(shim, owner=net.id, reason=reason))
        return out


# ---------------------------------------------------------------------------------------- host_access shim


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
    """host_access: a macvlan in bridge mode on the parent, the kernel does not pass parent <-> child traffic."""
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
        ifname=shim_name(net.id),
        owner=net.id,
        parent=net.parent.ifname,
        address=addrs[0],
        routes=tuple(routes),
        kernel_mode=MODES["bridge"],
    )


def shim_drift(spec: ShimSpec, seen: ObservedLink | None) -> str | None:
    if seen is None:
        return MISSING
    if seen.kind != "macvlan" or seen.owner != spec.owner:
        return "not netd's shim"
    if not seen.up:
        return "down"
    if spec.address not in seen.addresses:
        return "address missing"
    return None


MACVLAN = Macvlan()
