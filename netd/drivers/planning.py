"""Pure planning for parent/child networks: parents and shims first, children, then deletions.

Called by ``netd.plan.plan`` for the networks and endpoints whose driver is not the bridge.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from netd.linkspec import ChildSpec, ObservedChild, ObservedHost, ObservedLink, ShimSpec
from netd.model import DesiredState, Endpoint, Network

from . import is_link_network, link_driver
from .actions import DeleteChildren, EnsureChild, EnsureParent, EnsureShim
from .macvlan import build_shim_spec
from .parent import build_parent_spec, gone_parents, parent_drift

CHILD_KINDS = ("macvlan", "ipvlan")


def plan_parents(nets: Iterable[Network], host: ObservedHost) -> list[EnsureParent | EnsureShim]:
    """Parents (each once, even when networks share one), then host_access shims."""
    out: list[EnsureParent | EnsureShim] = []
    seen: set[str] = set()
    for net in nets:
        if not is_link_network(net) or net.parent is None or net.parent.ifname in seen:
            continue
        seen.add(net.parent.ifname)
        spec = build_parent_spec(net)
        reason = parent_drift(spec, host.by_name.get(spec.ifname))
        if reason is not None:
            out.append(EnsureParent(spec, owner=net.id, reason=reason))
    for net in nets:
        shim = build_shim_spec(net) if is_link_network(net) else None
        if shim is not None:
            reason = _shim_drift(shim, host.by_name.get(shim.ifname))
            if reason is not None:
                out.append(EnsureShim(shim, owner=net.id, reason=reason))
    return out


def _shim_drift(spec: ShimSpec, seen: ObservedLink | None) -> str | None:
    if seen is None:
        return "missing"
    if seen.kind != "macvlan" or seen.owner != spec.owner:
        return "not netd's shim"
    if not seen.up:
        return "down"
    if spec.address not in seen.addresses:
        return "address missing"
    return None


def plan_child(ep: Endpoint, net: Network, ns_path: str, seen: ObservedChild | None) -> EnsureChild | None:
    spec = link_driver(net).build_child_spec(ep, net, ns_path)
    reason = _child_drift(spec, seen)
    return EnsureChild(spec, owner=ep.id, reason=reason) if reason is not None else None


def _child_drift(spec: ChildSpec, seen: ObservedChild | None) -> str | None:
    if seen is None or seen.ns_path != spec.netns.path:
        return "missing"
    link = seen.link
    if link.kind != spec.kind:
        return f"a {link.kind}, not a {spec.kind}"
    if not link.up:
        return "down"
    missing = [a for a in spec.addresses if a not in link.addresses]
    if missing:
        return "address missing: " + ", ".join(str(a) for a in missing)
    return None


def plan_link_deletions(
    desired: DesiredState,
    host: ObservedHost,
    children: dict[str, ObservedChild],
    has_endpoint: Collection[str] | None,
) -> list[DeleteChildren | tuple[str, ...]]:
    """Owned children whose endpoint is gone (``has_endpoint``: ids in scope, None = all), then the names of
    shims and netd-made parents no network wants (returned as a tuple for a DeleteLinks)."""
    out: list[DeleteChildren | tuple[str, ...]] = []
    gone = tuple(
        (c.ns_path, c.link.ifname)
        for owner, c in sorted(children.items())
        if owner not in desired.endpoints and (has_endpoint is None or owner in has_endpoint)
    )
    if gone:
        out.append(DeleteChildren(gone, owner="endpoints"))
    shims_wanted = {s.ifname for s in (build_shim_spec(n) for n in desired.networks.values()) if s is not None}
    by_id = {n.id: n for n in desired.networks.values()}
    links = [
        lk.ifname
        for lk in sorted(host.by_name.values(), key=lambda lk: lk.ifname)
        if lk.kind == "macvlan"
        and lk.owner is not None
        and lk.ifname not in shims_wanted
        and lk.owner not in desired.endpoints
        and (lk.owner not in by_id or is_link_network(by_id[lk.owner]))
    ]
    links += gone_parents(desired, host)
    if links:
        out.append(tuple(links))
    return out
