"""Pure planning: diff(desired, observed) -> ordered actions.

The planner never talks to the kernel.  It gets what the reconciler observed (owned links in the daemon's
namespace, which namespaces are alive, the forwarding sysctl) and returns the smallest list of actions that
makes the kernel match the desired state.  An empty plan means "in sync": that is what makes reconciling
idempotent.  What a network or an endpoint needs is the business of its driver (``netd.drivers``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from netd.core.actions import (
    Action,
    ApplyFirewall,
    EnsureNetns,
    FlushConntrack,
    MarkNetns,
    Observed,
    RemoveAdoptedAddresses,
    RemoveNetns,
    RestoreSysctls,
    Scope,
    SetSysctl,
    dedupe_key,
)
from netd.core.model import DesiredState, Endpoint
from netd.core.ports import entries_of
from netd.drivers import DRIVERS, get_driver
from netd.firewall.rules import udp_changes

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


def _in_state_order(state: DesiredState, scope: Scope) -> Iterable[Endpoint]:
    """The endpoints of ``scope`` in the state's order, without a pass over all of them for a small scope."""
    eps = state.endpoints
    if scope.endpoints is None or len(scope.endpoints) > 16:
        return [ep for ep in eps.values() if scope.has_endpoint(ep.id)]
    ids = [i for i in scope.endpoints if i in eps]
    if len(ids) > 1:
        order = list(eps)  # C-level
        ids.sort(key=order.index)
    return [eps[i] for i in ids]


def scope_targets(state: DesiredState, scope: Scope) -> frozenset[str]:
    """The namespaces (Endpoint.target) whose endpoint links are observed inside them (macvlan/ipvlan)."""
    out = set()
    for ep in _endpoints_in(state, scope):
        net = state.network_by_id(ep.network)
        if net is not None and get_driver(net).observes_endpoint_netns(net):
            out.add(ep.target)
    return frozenset(out)


def localnet_keys(state: DesiredState, scope: Scope) -> dict[str, str]:
    """route_localnet of the networks in scope that publish ports (127.0.0.1:<port> from the host needs it on
    the network's host interface, as Docker sets it), by network id."""
    touched = {
        n.id
        for n in state.networks.values()
        if scope.has_network(n.id) and get_driver(n).features(n).published_ports
    }
    touched |= {ep.network for ep in _endpoints_in(state, scope) if ep.ports}
    out: dict[str, str] = {}
    if not touched:
        return out
    for net_id in _publishing(state, touched):
        net = state.network_by_id(net_id)
        if net is not None and net.pool(4) is not None and get_driver(net).features(net).published_ports:
            out[net_id] = f"net/ipv4/conf/{net.bridge}/route_localnet"
    return out


def _publishing(state: DesiredState, among: set[str]) -> set[str]:
    """The networks of ``among`` with an endpoint that publishes a port (``ports.published``'s keys, without
    building every endpoint's entries: a connect with -p at 1000 published ports paid that)."""
    out: set[str] = set()
    for ep in state.endpoints.values():
        if ep.ports and ep.network in among and ep.network not in out and entries_of(ep):
            out.add(ep.network)
            if len(out) == len(among):
                break
    return out


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
    """Actions in dependency order: sysctls, netns (and their markers), networks' host links, the firewall,
    endpoints, the drivers' extras, route_localnet, then deletions (endpoints' links before networks')."""
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

    for name in sorted(desired.netns if scope.netns is None else scope.netns & desired.netns.keys()):
        # the marker first: a kill between the two leaves a marker without a mount, which the next reconcile
        # finishes (desired) or removes (not desired); never a mount netd does not know.  Alive without the
        # marker: made by an older netd killed before it marked; marking it lets netns rm remove the mount
        if name not in observed.netns_owned:
            actions.append(MarkNetns(name, owned=True, owner=name))
        if name not in observed.netns_alive:
            actions.append(EnsureNetns(name, owner=name, host=desired.netns[name].network == "host"))

    for net in desired.networks.values():
        if scope.has_network(net.id):
            actions.extend(get_driver(net).plan_network(net, observed))

    actions.extend(_plan_firewall(desired, observed, scope))

    for ep in _in_state_order(desired, scope):
        ep_net = desired.network_by_id(ep.network)
        if ep_net is None:
            continue
        if ep.netns is not None and ep.netns not in observed.netns_alive and ep.netns not in desired.netns:
            continue  # its netns is going away
        if ep.id in scope.refresh:  # only then: drivers that never refresh need not know the flag
            actions.extend(get_driver(ep_net).plan_endpoint(ep, ep_net, ns_path(ep), observed, refresh=True))
        else:
            actions.extend(get_driver(ep_net).plan_endpoint(ep, ep_net, ns_path(ep), observed))

    for drv in DRIVERS.values():
        actions.extend(drv.plan_extra(desired, observed, scope))

    for net_id, key in localnet_keys(desired, scope).items():
        if key in observed.sysctls and observed.sysctls[key] != "1":  # "" too: the bridge was missing
            actions.append(SetSysctl(key, "1", owner=net_id, best_effort=True))

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
            actions.append(MarkNetns(name, owned=False, owner=name))
    # what netd changed on things not its own, once nothing needs it
    if observed.changed_sysctls and not ip6_forward:
        actions.append(RestoreSysctls(tuple(sorted(observed.changed_sysctls))))
    wanted_nets = {n.id for n in desired.networks.values()}
    for net_id, (bridge, addrs) in sorted(observed.changed_addresses.items()):
        if net_id not in wanted_nets and scope.has_network(net_id):
            actions.append(RemoveAdoptedAddresses(bridge, addrs, owner=net_id))
    return _dedupe(actions)


def _plan_firewall(desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]:
    """The whole ruleset when it changed or the kernel lost it; then the UDP conntrack entries of published
    ports that changed (not at start-up: the previous ruleset is unknown then, and live flows through
    unchanged ports must not be cut)."""
    fw = observed.firewall
    if fw is None or (fw.wanted == fw.applied and fw.in_sync):
        return []
    why = "the desired state changed" if fw.wanted != fw.applied else "missing or changed in the kernel"
    nets = tuple(n.id for n in desired.networks.values() if scope.has_network(n.id))
    out: list[Action] = [ApplyFirewall(fw.wanted, why, networks=nets)]
    if fw.applied is not None:
        changed = udp_changes(fw.applied, fw.wanted)
        if changed:
            out.append(FlushConntrack(tuple(changed)))
    return out


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
