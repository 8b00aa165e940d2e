"""The bridge driver (pure): a Linux bridge per network with the gateway addresses, a veth per endpoint.

Docker's default kind: netd's firewall chains, NAT, published ports and the embedded DNS apply to it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_interface
from typing import Any

from netd.core.actions import MISSING, Action, DeleteLinks, EnsureBridge, EnsureVeth, Observed, Scope
from netd.core.errors import ConflictError, InvalidError
from netd.core.linkspec import BridgeSpec, Iface, NsRef, ObservedHost, ObservedLink, VethSpec
from netd.core.model import DesiredState, Endpoint, Network
from netd.core.naming import bridge_name, endpoint_mac, host_veth_name, mac_for, validate_ifname
from netd.core.request import OPT_ENABLE_V4, OPT_MTU
from netd.drivers.base import DriverOptions, Features, bool_option, gateways, peer_drift

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_GW_MODE_V6 = "com.docker.network.bridge.gateway_mode_ipv6"
GATEWAY_MODES = ("nat", "routed")


@dataclass(frozen=True)
class BridgeOptions(DriverOptions):
    bridge: str | None
    icc: bool = True
    masquerade: bool = True
    gateway_mode_ipv6: str = "nat"


class Bridge:
    name: str = "bridge"
    options: tuple[str, ...] = (OPT_BRIDGE_NAME, OPT_ICC, OPT_MASQ, OPT_MTU, OPT_GW_MODE_V6, OPT_ENABLE_V4)

    def parse_options(self, options: Mapping[str, str]) -> BridgeOptions:
        bridge = options.get(OPT_BRIDGE_NAME)
        if bridge is not None:
            validate_ifname(bridge, OPT_BRIDGE_NAME)
        gw_mode = options.get(OPT_GW_MODE_V6, "nat")
        if gw_mode not in GATEWAY_MODES:
            raise InvalidError(
                f"option {OPT_GW_MODE_V6}={gw_mode!r}: expected one of {', '.join(GATEWAY_MODES)}",
                field=OPT_GW_MODE_V6,
            )
        return BridgeOptions(
            bridge=bridge,
            icc=bool_option(options, OPT_ICC, True),
            masquerade=bool_option(options, OPT_MASQ, True),
            gateway_mode_ipv6=gw_mode,
        )

    def create_observes(self, base: Network, opts: DriverOptions) -> Collection[str] | None:
        assert isinstance(opts, BridgeOptions)
        return [opts.bridge or bridge_name(base.id)]

    def build_network(
        self, base: Network, opts: DriverOptions, host: ObservedHost, state: DesiredState
    ) -> Network:
        assert isinstance(opts, BridgeOptions)
        bridge = opts.bridge or bridge_name(base.id)
        adopted = _check_bridge_name(bridge, base.name, host.by_name.get(bridge), state)
        return base.model_copy(
            update={
                "bridge": bridge,
                "bridge_adopted": adopted,
                "icc": opts.icc,
                "masquerade": opts.masquerade,
                "gateway_mode_ipv6": "routed" if opts.gateway_mode_ipv6 == "routed" else "nat",
            }
        )

    def check_connect(self, net: Network, state: DesiredState) -> None:
        return None

    def features(self, net: Network) -> Features:
        # the default bridge has no name service (Docker's rule)
        return Features(filtered=True, nat=True, published_ports=True, dns=not net.is_default)

    def link_names(self, net: Network) -> set[str]:
        return {net.bridge} if net.bridge else set()

    def endpoint_host_ifname(self, ep_id: str) -> str:
        return host_veth_name(ep_id)

    def endpoint_mac(self, net: Network, ep_id: str, ipv4: IPv4Address | None) -> str:
        return endpoint_mac(ep_id, ipv4)

    def observes_endpoint_netns(self, net: Network) -> bool:
        return False  # the veth's host side tells: it is found with the bridge

    def plan_network(self, net: Network, observed: Observed) -> list[Action]:
        host = observed.host
        spec = build_bridge_spec(net)
        seen = host.by_name.get(net.bridge) if net.bridge_adopted else host.bridges.get(net.id)
        reason = bridge_drift(spec, seen)
        return [EnsureBridge(spec, owner=net.id, reason=reason)] if reason is not None else []

    def plan_endpoint(
        self, ep: Endpoint, net: Network, ns_path: str, observed: Observed, refresh: bool = False
    ) -> list[Action]:
        host = observed.host
        spec = build_veth_spec(ep, net, ns_path)
        reason = veth_drift(spec, host.veths.get(ep.id), host.by_name.get(net.bridge))
        if reason is None and refresh:  # the namespace side changed (addresses, MTU): re-apply it
            return [EnsureVeth(spec, owner=ep.id, reason="namespace side changed", reconfigure=True)]
        if reason is None:
            gw4, gw6 = (None if g is None else str(g) for g in (spec.gateway4, spec.gateway6))
            inside = peer_drift(spec.addresses, spec.mac, spec.mtu, gw4, gw6, observed.peers.get(ep.id))
            if inside is None:
                return []
            return [EnsureVeth(spec, owner=ep.id, reason=inside, repair_peer=True)]
        return [EnsureVeth(spec, owner=ep.id, reason=reason, seen_missing=reason == MISSING)]

    async def observe_extra(self, kernel: Any, desired: DesiredState, scope: Scope) -> Any:
        return None

    def plan_extra(self, desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]:
        return []

    def plan_cleanup(self, desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]:
        """Veths of gone endpoints (ports first), then bridges of gone networks."""
        host = observed.host
        out: list[Action] = []
        gone_veths = [
            link.ifname
            for owner, link in sorted(host.veths.items())
            if scope.has_endpoint(owner) and owner not in desired.endpoints
        ]
        if gone_veths:
            out.append(DeleteLinks(tuple(gone_veths), owner="endpoints"))
        wanted = {n.id for n in desired.networks.values()}
        gone_bridges = [
            link.ifname
            for owner, link in sorted(host.bridges.items())
            if scope.has_network(owner) and owner not in wanted
        ]
        if gone_bridges:
            out.append(DeleteLinks(tuple(gone_bridges), owner="networks"))
        return out


def _check_bridge_name(bridge: str, network: str, link: ObservedLink | None, state: DesiredState) -> bool:
    """True when an existing (foreign) bridge of that name is adopted, like Docker does."""
    for other in state.networks.values():
        if other.bridge == bridge:
            raise ConflictError(
                f"network {network!r}: bridge {bridge} is already used by network {other.name!r}",
                field=OPT_BRIDGE_NAME,
            )
    if link is None:
        return False
    if link.kind != "bridge":
        raise ConflictError(
            f"network {network!r}: interface {bridge} exists and is a {link.kind or 'device'}, not a bridge; "
            f"choose another {OPT_BRIDGE_NAME}",
            field=OPT_BRIDGE_NAME,
        )
    return True


def build_bridge_spec(net: Network) -> BridgeSpec:
    addrs: list[Iface] = []
    for cfg in net.ipam:
        if cfg.gateway is not None:
            addrs.append(ip_interface(f"{cfg.gateway}/{cfg.subnet.prefixlen}"))
    return BridgeSpec(
        ifname=net.bridge,
        owner=net.id,
        mtu=net.mtu,
        addresses=tuple(addrs),
        adopt=net.bridge_adopted,
        mac=None if net.bridge_adopted else mac_for(net.id),
    )


def build_veth_spec(ep: Endpoint, net: Network, ns_path: str) -> VethSpec:
    gw4, gw6 = gateways(ep, net)
    return VethSpec(
        host_ifname=ep.host_ifname,
        owner=ep.id,
        bridge=net.bridge,
        mtu=net.mtu,
        netns=NsRef(ns_path),
        peer_ifname=ep.ifname,
        mac=ep.mac,
        addresses=tuple(a for a in (ep.ipv4, ep.ipv6) if a is not None),
        gateway4=gw4,
        gateway6=gw6,
        announce=announced(ep, net),
        ipv6_off=net.pool(6) is None,
    )


def announced(ep: Endpoint, net: Network) -> tuple[Iface, ...]:
    """The addresses a new endpoint announces: those a peer or the host may have cached with another MAC.

    On a bridge netd made, an IPv4 address is held with the MAC 02:42 + the address (``endpoint_mac``, Docker's
    rule) by every endpoint without a MacAddress of its own, so an entry cached for an earlier holder is already
    right and the gratuitous ARP, a broadcast the bridge floods to every port (O(N) per connect, measured in
    bench/bridge_flood.py), is sent only when this endpoint or an earlier one on the network had its own MAC
    (``Network.custom_macs``; unknown for a network from an older state: everything is announced).  A bridge
    netd adopted may have other hosts on it, and an overlay has peers on other nodes: everything is announced
    there.  IPv6 addresses are always announced (a reused IPv6 address may come with another IPv4 address,
    hence another MAC)."""
    derived = ep.ipv4 is not None and ep.mac == endpoint_mac(ep.id, ep.ipv4.ip)
    cached_right = net.driver == "bridge" and net.custom_macs is False and not net.bridge_adopted and derived
    return tuple(a for a in (ep.ipv4, ep.ipv6) if a is not None and not (cached_right and a.version == 4))


def bridge_drift(spec: BridgeSpec, seen: ObservedLink | None) -> str | None:
    if seen is None:
        return MISSING
    if seen.kind != "bridge":
        return f"{spec.ifname} is a {seen.kind or 'device'}, not a bridge"
    if spec.mtu is not None and seen.mtu != spec.mtu:
        return f"mtu {seen.mtu} != {spec.mtu}"
    if not seen.up:
        return "down"
    if spec.mac is not None and seen.mac.lower() != spec.mac:
        return f"mac {seen.mac} != {spec.mac}"
    missing = [a for a in spec.addresses if a not in seen.addresses]
    if missing:
        return "address missing: " + ", ".join(str(a) for a in missing)
    return None


def veth_drift(spec: VethSpec, seen: ObservedLink | None, bridge: ObservedLink | None) -> str | None:
    if seen is None:
        return MISSING
    if bridge is None or seen.master != bridge.index:
        return "not attached to its bridge"
    if not seen.up:
        return "down"
    return None


BRIDGE = Bridge()
