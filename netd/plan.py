"""Pure planning: diff(desired, observed) -> ordered actions.

The planner never talks to the kernel.  It gets what the reconciler observed (owned links in the daemon's
namespace, which namespaces are alive, the forwarding sysctl) and returns the smallest list of actions that
makes the kernel match the desired state.  An empty plan means "in sync": that is what makes reconciling
idempotent.  What a network or an endpoint needs is the business of its driver (``netd.drivers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .actions import (
    Action,
    EnsureNetns,
    Observed,
    RemoveNetns,
    Scope,
    SetSysctl,
    dedupe_key,
)
from .drivers import DRIVERS, get_driver
from .model import DesiredState, Endpoint

IP6_FORWARD = "net.ipv6.conf.all.forwarding"


def scope_links(state: DesiredState, scope: Scope) -> frozenset[str]:
    """The link names a scoped reconcile looks at: those of the networks and endpoints in scope."""
    names: set[str] = set()
    for net in state.networks.values():
        if scope.has_network(net.id):
            names |= get_driver(net).link_names(net)
    for ep in _endpoints_in(state, scope):
        if ep.host_ifname:
            names.add(ep.host_ifname)
        ep_net = state.network_by_id(ep.network)
        if ep_net is not None:
            names |= get_driver(ep_net).link_names(ep_net)
    return frozenset(names)


def _endpoints_in(state: DesiredState, scope: Scope) -> Iterable[Endpoint]:
    """The endpoints of ``scope``: by id lookups for a scoped change, not a pass over all of them."""
    if scope.endpoints is None:
        return state.endpoints.values()
    return [ep for i in scope.endpoints if (ep := state.endpoints.get(i)) is not None]


def scope_targets(state: DesiredState, scope: Scope) -> frozenset[str]:
    """The namespaces (Endpoint.target) whose endpoint links are observed inside them (macvlan/ipvlan)."""
    out = set()
    for ep in _endpoints_in(state, scope):
        net = state.network_by_id(ep.network)
        if net is not None and get_driver(net).observes_endpoint_netns(net):
            out.add(ep.target)
    return frozenset(out)


def wants_ip6_forward(state: DesiredState, ip6_forward: bool) -> bool:
    return ip6_forward and any(n.pool(6) is not None for n in state.networks.values())


def plan(
    desired: DesiredState,
    observed: Observed,
    *,
    ns_path: Callable[[Endpoint], str],
    ip_forward: bool,
    ip6_forward: bool = False,
    scope: Scope | None = None,
) -> list[Action]:
    """Actions in dependency order: sysctls, netns, networks' host links, endpoints, the drivers' extras,
    then deletions (endpoints' links before networks')."""
    scope = scope or Scope.everything()
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
        if scope.has_network(net.id):
            actions.extend(get_driver(net).plan_network(net, observed))

    for ep in desired.endpoints.values():
        if not scope.has_endpoint(ep.id):
            continue
        ep_net = desired.network_by_id(ep.network)
        if ep_net is None:
            continue
        if ep.netns is not None and ep.netns not in observed.netns_alive and ep.netns not in desired.netns:
            continue  # its netns is going away
        actions.extend(get_driver(ep_net).plan_endpoint(ep, ep_net, ns_path(ep), observed))

    for drv in DRIVERS.values():
        actions.extend(drv.plan_extra(desired, observed, scope))

    # Deletions: owned objects in scope that are no longer desired, the endpoints' links before the networks'.
    # Drivers that share one implementation (macvlan and ipvlan: the same function) are asked once.
    gone: list[Action] = []
    asked: set[object] = set()
    for drv in DRIVERS.values():
        impl = getattr(drv.plan_cleanup, "__func__", drv.plan_cleanup)
        if impl not in asked:
            asked.add(impl)
            gone.extend(drv.plan_cleanup(desired, observed, scope))
    actions.extend(sorted(gone, key=lambda a: a.owner != "endpoints"))
    for name in sorted(observed.netns_owned):
        if scope.has_netns(name) and name not in desired.netns:
            actions.append(RemoveNetns(name, owner=name))
    return _dedupe(actions)


def _dedupe(actions: list[Action]) -> list[Action]:
    seen: set[tuple[str, str]] = set()
    out: list[Action] = []
    for a in actions:
        key = dedupe_key(a)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(a)
    return out
