"""What macvlan and ipvlan share (pure): endpoints are children of a parent link, created directly in the
endpoint's namespace; the parent (``netd.drivers.parent``) and the host_access shim live in the daemon's.

``ChildLinkDriver`` implements ``NetworkDriver`` for both; ``Macvlan`` and ``Ipvlan`` add their options, their
mode tables and the child's spec.  Neither gets netd's firewall chains, NAT, published ports or DNS (Docker's
behaviour: the endpoints sit on the parent's segment).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from netd.core.actions import (
    MISSING,
    Action,
    DeleteChildren,
    DeleteLinks,
    EnsureChild,
    EnsureParent,
    Observed,
    Scope,
)
from netd.core.errors import ConflictError, InvalidError
from netd.core.linkspec import ChildSpec, Iface, ObservedChild, ObservedHost
from netd.core.model import DesiredState, Endpoint, Network, ParentLink
from netd.drivers.base import NO_FEATURES, DriverOptions, Features, peer_drift

__all__ = ["CHILD_KINDS", "ChildLinkDriver", "LinkOptions", "child_addresses", "shim_name"]
from netd.drivers.parent import (
    LinkOptions,
    build_parent_spec,
    gone_parents,
    parent_drift,
    parent_names,
    resolve_parent,
)

CHILD_KINDS = ("macvlan", "ipvlan")


def shim_name(net_id: str) -> str:
    """macvlan's host_access shim in the daemon's namespace (see ``netd.drivers.macvlan``)."""
    return "mvh-" + net_id[:11]


# no firewall, no NAT, no host address the endpoints reach: names from a resolver inside each namespace
NS_RESOLVER_ONLY = replace(NO_FEATURES, ns_resolver=True)


class ChildLinkDriver:
    """The ``NetworkDriver`` methods macvlan and ipvlan share; subclasses give ``name``, ``options``,
    ``parse_options``, ``endpoint_mac`` and ``build_child_spec``."""

    name: str = ""

    @property
    def kernel_kind(self) -> str:
        """The kernel link kind of its endpoints (macvlan, ipvlan): asked of the kernel at create, so a kernel
        without the module refuses the network then, not at the first connect."""
        return self.name

    def build_child_spec(self, ep: Endpoint, net: Network, ns_path: str) -> ChildSpec:
        raise NotImplementedError

    def create_observes(self, base: Network, opts: DriverOptions) -> Collection[str] | None:
        return None  # validating a parent needs every link (ports of bridges, VLANs under other names)

    def build_network(
        self, base: Network, opts: DriverOptions, host: ObservedHost, state: DesiredState
    ) -> Network:
        """Fill in the parent (validated against the kernel and the other networks) and the driver's settings."""
        assert isinstance(opts, LinkOptions)
        parent = resolve_parent(base.name, base.id, base.driver, opts, base.internal, host, state)
        _check_mtu(base, parent, host)
        return base.model_copy(
            update={
                "bridge": "",
                "parent": parent,
                "mode": opts.mode,
                "ipvlan_flag": opts.flag,
                "host_access": opts.host_access,
                "icc": True,
                "masquerade": False,
            }
        )

    def check_connect(self, net: Network, state: DesiredState) -> None:
        """passthru: the kernel allows one macvlan on the parent, so one endpoint per network."""
        if net.mode == "passthru" and state.endpoints_of(net.id):
            raise ConflictError(
                f"network {net.name!r} is macvlan passthru and already has its one endpoint; disconnect it first "
                "or use macvlan_mode=bridge"
            )

    def features(self, net: Network) -> Features:
        return NS_RESOLVER_ONLY

    def link_names(self, net: Network) -> set[str]:
        names = parent_names(net)
        if net.host_access:
            names.add(shim_name(net.id))
        return names

    def endpoint_host_ifname(self, ep_id: str) -> str:
        return ""  # the child lives only in the endpoint's namespace

    def observes_endpoint_netns(self, net: Network) -> bool:
        return True

    # -- planning ----------------------------------------------------------------------------------------------

    def plan_network(self, net: Network, observed: Observed) -> list[Action]:
        """The parent (a shared one once: the plan drops a second ``EnsureParent`` of one link)."""
        if net.parent is None:
            return []
        spec = build_parent_spec(net)
        reason = parent_drift(spec, observed.host.by_name.get(spec.ifname))
        return [EnsureParent(spec, owner=net.id, reason=reason)] if reason is not None else []

    def plan_endpoint(
        self, ep: Endpoint, net: Network, ns_path: str, observed: Observed, refresh: bool = False
    ) -> list[Action]:
        spec = self.build_child_spec(ep, net, ns_path)
        reason = child_drift(spec, observed.children.get(ep.id))
        if reason is None:  # its routes (and MTU), from inside the namespace, when this reconcile read them
            gw4, gw6 = (None if g is None else str(g) for g in (spec.gateway4, spec.gateway6))
            if spec.default_dev:
                gw4, gw6 = "", ("" if any(a.version == 6 for a in spec.addresses) else None)
            reason = peer_drift(spec.addresses, spec.mac, spec.mtu, gw4, gw6, observed.peers.get(ep.id))
        return [EnsureChild(spec, owner=ep.id, reason=reason)] if reason is not None else []

    async def observe_extra(self, kernel: Any, desired: DesiredState, scope: Scope) -> Any:
        return None

    def plan_extra(self, desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]:
        return []

    def plan_cleanup(self, desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]:
        return plan_child_cleanup(desired, observed, scope)


def plan_child_cleanup(desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]:
    """Owned children whose endpoint is gone (in scope), then the shims and netd-made parents no network
    wants.  One function for both kinds: the planner runs each distinct cleanup once."""
    host = observed.host
    out: list[Action] = []
    gone = tuple(
        (c.ns_path, c.link.ifname)
        for owner, c in sorted(observed.children.items())
        if owner not in desired.endpoints and scope.has_endpoint(owner)
    )
    if gone:
        out.append(DeleteChildren(gone, owner="endpoints"))
    shims_wanted = {shim_name(n.id) for n in desired.networks.values() if n.host_access and n.parent is not None}
    by_id = {n.id: n for n in desired.networks.values()}
    links = [
        lk.ifname
        for lk in sorted(host.by_name.values(), key=lambda lk: lk.ifname)
        if lk.kind == "macvlan"
        and lk.owner is not None
        and lk.ifname not in shims_wanted
        and lk.owner not in desired.endpoints
        and (lk.owner not in by_id or by_id[lk.owner].driver in CHILD_KINDS)
    ]
    links += gone_parents(desired, host)
    if links:
        out.append(DeleteLinks(tuple(links), owner="networks"))
    return out


def child_drift(spec: ChildSpec, seen: ObservedChild | None) -> str | None:
    if seen is None or seen.ns_path != spec.netns.path:
        return MISSING
    link = seen.link
    if link.kind != spec.kind:
        return f"a {link.kind}, not a {spec.kind}"
    if not link.up:
        return "down"
    missing = [a for a in spec.addresses if a not in link.addresses]
    if missing:
        return "address missing: " + ", ".join(str(a) for a in missing)
    return None


def child_addresses(ep: Endpoint) -> tuple[Iface, ...]:
    return tuple(a for a in (ep.ipv4, ep.ipv6) if a is not None)


def _check_mtu(base: Network, parent: ParentLink, host: ObservedHost) -> None:
    """A macvlan/ipvlan child cannot have a larger MTU than its parent (the kernel says only EINVAL)."""
    lower = parent.ifname if parent.kind == "existing" else parent.base if parent.kind == "vlan" else None
    link = host.by_name.get(lower) if lower is not None else None
    if base.mtu is not None and link is not None and base.mtu > link.mtu:
        raise InvalidError(
            f"network {base.name!r}: mtu {base.mtu} is above the parent {link.ifname}'s mtu {link.mtu}; give "
            f"-o com.docker.network.driver.mtu={link.mtu} or less (or raise {link.ifname}'s mtu first)",
            field="com.docker.network.driver.mtu",
        )
