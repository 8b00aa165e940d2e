"""The ipvlan driver (pure): options and mode tables, the endpoint's child spec."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

from netd.core.linkspec import ChildSpec, NsRef
from netd.core.model import Endpoint, Network
from netd.drivers.base import OPT_PARENT, choice, gateways
from netd.drivers.childlink import ChildLinkDriver, LinkOptions, child_addresses

OPT_MODE = "ipvlan_mode"
OPT_FLAG = "ipvlan_flag"
MODES = {"l2": 0, "l3": 1, "l3s": 2}  # IFLA_IPVLAN_MODE
FLAGS = {"bridge": 0, "private": 1, "vepa": 2}  # IFLA_IPVLAN_FLAGS


class Ipvlan(ChildLinkDriver):
    name: str = "ipvlan"
    options: tuple[str, ...] = (OPT_PARENT, OPT_MODE, OPT_FLAG)

    def parse_options(self, options: Mapping[str, str]) -> LinkOptions:
        return LinkOptions(
            parent=options.get(OPT_PARENT) or None,
            mode=choice(options, OPT_MODE, tuple(MODES), "l2"),
            flag=choice(options, OPT_FLAG, tuple(FLAGS), "bridge"),
        )

    def endpoint_mac(self, net: Network, ep_id: str, ipv4: IPv4Address | None) -> str:
        return ""  # every ipvlan child has its parent's MAC address

    def build_child_spec(self, ep: Endpoint, net: Network, ns_path: str) -> ChildSpec:
        assert net.parent is not None
        mode = net.mode or "l2"
        flag = net.ipvlan_flag or "bridge"
        routed = mode != "l2"
        gw4, gw6 = (None, None) if routed else gateways(ep, net)
        return ChildSpec(
            kind="ipvlan",
            owner=ep.id,
            parent=net.parent.ifname,
            mode=mode,
            flag=flag,
            netns=NsRef(ns_path),
            peer_ifname=ep.ifname,
            mac=None,
            mtu=net.mtu,
            addresses=child_addresses(ep),
            gateway4=gw4,
            gateway6=gw6,
            # l3/l3s: no gateway; the parent's host routes the traffic (Docker's behaviour)
            default_dev=routed and ep.default_route and not net.internal,
            kernel_mode=MODES[mode],
            kernel_flags=FLAGS[flag],
        )


IPVLAN = Ipvlan()
