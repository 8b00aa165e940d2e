"""Pure planning: diff(desired, observed) -> ordered actions.

The planner never talks to the kernel.  It gets what the reconciler observed (owned links in the daemon's
namespace, which namespaces are alive, the forwarding sysctl) and returns the smallest list of actions that
makes the kernel match the desired state.  An empty plan means "in sync": that is what makes reconciling
idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_interface

from .drivers import is_link_network, network_link_names
from .drivers.actions import DeleteChildren, EnsureChild, EnsureParent, EnsureShim
from .drivers.planning import plan_child, plan_link_deletions, plan_parents
from .linkspec import BridgeSpec, Iface, NsRef, ObservedChild, ObservedHost, ObservedLink, VethSpec
from .model import DesiredState, Endpoint, Network
from .naming import mac_for


@dataclass(frozen=True)
class EnsureNetns:
    name: str
    owner: str  # the netns name: errors are reported against it


@dataclass(frozen=True)
class RemoveNetns:
    name: str
    owner: str


@dataclass(frozen=True)
class EnsureBridge:
    spec: BridgeSpec
    owner: str
    reason: str


@dataclass(frozen=True)
class EnsureVeth:
    spec: VethSpec
    owner: str
    reason: str


@dataclass(frozen=True)
class DeleteLinks:
    ifnames: tuple[str, ...]
    owner: str


@dataclass(frozen=True)
class SetSysctl:
    key: str
    value: str
    owner: str = "host"


Action = (
    EnsureNetns
    | RemoveNetns
    | EnsureBridge
    | EnsureVeth
    | DeleteLinks
    | SetSysctl
    | EnsureParent
    | EnsureShim
    | EnsureChild
    | DeleteChildren
)


@dataclass(frozen=True)
class Scope:
    """Which objects a reconcile looks at; ``None`` fields mean "all of that kind"."""

    networks: frozenset[str] | None = None  # network ids
    endpoints: frozenset[str] | None = None  # endpoint ids
    netns: frozenset[str] | None = None  # netns names
    links: frozenset[str] = frozenset()  # extra link names to observe (those of objects being removed)
    targets: frozenset[str] = frozenset()  # extra Endpoint.target keys to look into for macvlan/ipvlan children

    @classmethod
    def everything(cls) -> Scope:
        return cls()

    @classmethod
    def of(
        cls, *, networks: Iterable[str] = (), endpoints: Iterable[str] = (), netns: Iterable[str] = ()
    ) -> Scope:
        return cls(networks=frozenset(networks), endpoints=frozenset(endpoints), netns=frozenset(netns))

    @property
    def is_full(self) -> bool:
        return self.networks is None and self.endpoints is None and self.netns is None

    def has_network(self, net_id: str) -> bool:
        return self.networks is None or net_id in self.networks

    def has_endpoint(self, ep_id: str) -> bool:
        return self.endpoints is None or ep_id in self.endpoints

    def has_netns(self, name: str) -> bool:
        return self.netns is None or name in self.netns


def scope_links(state: DesiredState, scope: Scope) -> frozenset[str]:
    """The link names a scoped reconcile looks at: the bridges and veths of the objects in scope."""
    names: set[str] = set()
    for net in state.networks.values():
        if scope.has_network(net.id):
            names |= network_link_names(net)
    for ep in _endpoints_in(state, scope):
        if ep.host_ifname:
            names.add(ep.host_ifname)
        ep_net = state.network_by_id(ep.network)
        if ep_net is not None:
            names |= network_link_names(ep_net)
    return frozenset(names)


def _endpoints_in(state: DesiredState, scope: Scope) -> Iterable[Endpoint]:
    """The endpoints of ``scope``: by id lookups for a scoped change, not a pass over all of them."""
    if scope.endpoints is None:
        return state.endpoints.values()
    return [ep for i in scope.endpoints if (ep := state.endpoints.get(i)) is not None]


def scope_targets(state: DesiredState, scope: Scope) -> frozenset[str]:
    """The namespaces (Endpoint.target) holding macvlan/ipvlan children of the endpoints in scope."""
    out = set()
    for ep in _endpoints_in(state, scope):
        net = state.network_by_id(ep.network)
        if net is not None and is_link_network(net):
            out.add(ep.target)
    return frozenset(out)


@dataclass
class Observed:
    host: ObservedHost
    netns_alive: set[str]  # names of netd's netns (desired or marked owned) whose file is a live netns
    netns_owned: set[str]  # netns names netd created earlier (its markers)
    sysctls: dict[str, str] = field(default_factory=dict)
    children: dict[str, ObservedChild] = field(default_factory=dict)  # owned macvlan/ipvlan by endpoint id
    accept_ra: dict[str, str] = field(default_factory=dict)  # foreign links' accept_ra (read when IPv6 forwards)


IP6_FORWARD = "net.ipv6.conf.all.forwarding"


def wants_ip6_forward(state: DesiredState, ip6_forward: bool) -> bool:
    return ip6_forward and any(n.pool(6) is not None for n in state.networks.values())


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
    addrs: list[Iface] = [a for a in (ep.ipv4, ep.ipv6) if a is not None]
    gw4: IPv4Address | None = None
    gw6: IPv6Address | None = None
    if ep.default_route and not net.internal:
        p4, p6 = net.pool(4), net.pool(6)
        gw4 = p4.gateway if p4 is not None and isinstance(p4.gateway, IPv4Address) else None
        gw4 = net.default_gateway4 or gw4
        gw6 = p6.gateway if p6 is not None and isinstance(p6.gateway, IPv6Address) else None
        gw6 = net.default_gateway6 or gw6
    return VethSpec(
        host_ifname=ep.host_ifname,
        owner=ep.id,
        bridge=net.bridge,
        mtu=net.mtu,
        netns=NsRef(ns_path),
        peer_ifname=ep.ifname,
        mac=ep.mac,
        addresses=tuple(addrs),
        gateway4=gw4,
        gateway6=gw6,
    )


def _bridge_drift(spec: BridgeSpec, seen: ObservedLink | None) -> str | None:
    if seen is None:
        return VETH_MISSING
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


VETH_MISSING = "missing"  # the observe found no link of the name: the kernel layer may create without a check


def _veth_drift(spec: VethSpec, seen: ObservedLink | None, bridge: ObservedLink | None) -> str | None:
    if seen is None:
        return VETH_MISSING
    if bridge is None or seen.master != bridge.index:
        return "not attached to its bridge"
    if not seen.up:
        return "down"
    return None


def plan(
    desired: DesiredState,
    observed: Observed,
    *,
    ns_path: Callable[[Endpoint], str],
    ip_forward: bool,
    ip6_forward: bool = False,
    scope: Scope | None = None,
) -> list[Action]:
    """Actions in dependency order: netns, bridges, veths, then deletions (ports before bridges)."""
    scope = scope or Scope.everything()
    host = observed.host
    actions: list[Action] = []

    if ip_forward and observed.sysctls.get("net.ipv4.ip_forward") != "1":
        actions.append(SetSysctl("net.ipv4.ip_forward", "1"))
    if ip6_forward and observed.sysctls.get(IP6_FORWARD) != "1":
        # forwarding=1 makes the kernel ignore router advertisements on links with accept_ra=1: keep the
        # host's own IPv6 autoconfiguration working on its uplinks (Docker users lose it otherwise)
        for ifname, value in sorted(observed.accept_ra.items()):
            if value == "1":
                actions.append(SetSysctl(f"net/ipv6/conf/{ifname}/accept_ra", "2"))
        actions.append(SetSysctl(IP6_FORWARD, "1"))

    for name in sorted(desired.netns):
        # alive but without netd's marker: made by a netd killed before it wrote the marker (older versions
        # marked after the mount); the action writes the marker, so netns rm removes the mount
        if scope.has_netns(name) and (name not in observed.netns_alive or name not in observed.netns_owned):
            actions.append(EnsureNetns(name, owner=name))

    for net in desired.networks.values():
        if not scope.has_network(net.id) or is_link_network(net):
            continue
        spec = build_bridge_spec(net)
        seen = host.by_name.get(net.bridge) if net.bridge_adopted else host.bridges.get(net.id)
        reason = _bridge_drift(spec, seen)
        if reason is not None:
            actions.append(EnsureBridge(spec, owner=net.id, reason=reason))
    actions.extend(plan_parents([n for n in desired.networks.values() if scope.has_network(n.id)], host))

    for ep in desired.endpoints.values():
        if not scope.has_endpoint(ep.id):
            continue
        ep_net = desired.network_by_id(ep.network)
        if ep_net is None:
            continue
        if ep.netns is not None and ep.netns not in observed.netns_alive and ep.netns not in desired.netns:
            continue  # its netns is going away
        if is_link_network(ep_net):
            child = plan_child(ep, ep_net, ns_path(ep), observed.children.get(ep.id))
            if child is not None:
                actions.append(child)
            continue
        vspec = build_veth_spec(ep, ep_net, ns_path(ep))
        bridge = host.by_name.get(ep_net.bridge)
        reason = _veth_drift(vspec, host.veths.get(ep.id), bridge)
        if reason is not None:
            actions.append(EnsureVeth(vspec, owner=ep.id, reason=reason))

    # Deletions: owned objects in scope that are no longer desired.
    gone_veths = [
        link.ifname
        for owner, link in sorted(host.veths.items())
        if scope.has_endpoint(owner) and owner not in desired.endpoints
    ]
    if gone_veths:
        actions.append(DeleteLinks(tuple(gone_veths), owner="endpoints"))
    for item in plan_link_deletions(desired, host, observed.children, scope.endpoints):
        actions.append(item if isinstance(item, DeleteChildren) else DeleteLinks(item, owner="networks"))
    wanted_nets = {n.id for n in desired.networks.values()}
    gone_bridges = [
        link.ifname
        for owner, link in sorted(host.bridges.items())
        if scope.has_network(owner) and owner not in wanted_nets
    ]
    if gone_bridges:
        actions.append(DeleteLinks(tuple(gone_bridges), owner="networks"))
    for name in sorted(observed.netns_owned):
        if scope.has_netns(name) and name not in desired.netns:
            actions.append(RemoveNetns(name, owner=name))
    return actions


def describe(action: Action) -> str:
    match action:
        case EnsureNetns(name=name):
            return f"create netns {name}"
        case RemoveNetns(name=name):
            return f"remove netns {name}"
        case EnsureBridge(spec=spec, reason=reason):
            return f"ensure bridge {spec.ifname} ({reason})"
        case EnsureVeth(spec=spec, reason=reason):
            return f"ensure veth {spec.host_ifname} -> {spec.netns.path}:{spec.peer_ifname} ({reason})"
        case DeleteLinks(ifnames=names):
            return "delete " + ", ".join(names)
        case SetSysctl(key=key, value=value):
            return f"sysctl {key}={value}"
        case EnsureParent(spec=spec, reason=reason):
            return f"ensure parent {spec.ifname} ({spec.kind}, {reason})"
        case EnsureShim(spec=spec, reason=reason):
            return f"ensure host_access shim {spec.ifname} on {spec.parent} ({reason})"
        case EnsureChild(spec=spec, reason=reason):
            return f"ensure {spec.kind} {spec.netns.path}:{spec.peer_ifname} on {spec.parent} ({reason})"
        case DeleteChildren(children=children):
            return "delete " + ", ".join(f"{path}:{name}" for path, name in children)
    return repr(action)
