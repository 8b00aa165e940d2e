"""Which endpoint of a namespace carries its default route (pure): desired state, computed from the state.

Docker's rule (``--gw-priority``, API ``EndpointConfig.GwPriority``): among a namespace's endpoints on networks
that can carry one (not internal), the highest priority wins; ties go to the first connected.  Disconnecting
the carrier hands the default route to the next one; connecting one with a higher priority takes it over.

A namespace is grouped by ``ns_of`` (default ``Endpoint.target``): one namespace connected under two spellings
(a netd netns name and its path, or two paths) must be one group, so the service passes its inode identity.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from netd.core.model import DesiredState, Endpoint

NsOf = Callable[[Endpoint], str]


def by_target(ep: Endpoint) -> str:
    return ep.target


GW_PRIORITY_MIN = -(2**31)
GW_PRIORITY_MAX = 2**31 - 1


def _members(
    state: DesiredState, targets: Collection[str] | None, ns_of: NsOf, among: Iterable[str] | None = None
) -> list[tuple[int, str, Endpoint, str]]:
    """(order, id, endpoint, namespace) of the endpoints in ``targets`` (all when None), in the state's order:
    ``ns_of`` once per endpoint (with the service's inode identity it is most of the cost at N = 1000).
    ``among``: only those ids (in the state's order; those not in it skipped), a superset of the members."""
    out: list[tuple[int, str, Endpoint, str]] = []
    eps = state.endpoints
    items = eps.items() if among is None else ((i, eps[i]) for i in among if i in eps)
    for order, (ep_id, ep) in enumerate(items):
        ns = ns_of(ep)
        if targets is None or ns in targets:
            out.append((order, ep_id, ep, ns))
    return out


def _best(state: DesiredState, members: list[tuple[int, str, Endpoint, str]]) -> dict[str, str]:
    best: dict[str, tuple[int, int, str]] = {}
    internal = {n.id for n in state.networks.values() if n.internal}
    for order, _ep_id, ep, ns in members:
        if ep.network in internal:
            continue
        rank = (-ep.gw_priority, order, ep.id)
        cur = best.get(ns)
        if cur is None or rank < cur:
            best[ns] = rank
    return {target: rank[2] for target, rank in best.items()}


def carriers(
    state: DesiredState, targets: Collection[str] | None = None, ns_of: NsOf = by_target
) -> dict[str, str]:
    """The endpoint id that carries the default route, by namespace (``ns_of``; only ``targets``, in that key
    space, when given).  "First connected" is the order of ``state.endpoints``: a connect appends, the state
    file keeps it."""
    return _best(state, _members(state, targets, ns_of))


def assign_default_routes(
    state: DesiredState,
    targets: Collection[str] | None = None,
    ns_of: NsOf = by_target,
    among: Iterable[str] | None = None,
) -> set[str]:
    """Make ``default_route`` true on exactly the carriers (of the namespaces ``targets`` when given: a connect
    or disconnect changes one); ``state`` must be a ``copy_for_change`` (endpoints are replaced, never changed
    in place).  ``among``: the ids that may be in ``targets``, in the state's order (a connect knows them from
    the endpoint index: no pass over every endpoint).  Returns the ids of the endpoints whose flag changed."""
    members = _members(state, targets, ns_of, among)
    chosen = set(_best(state, members).values())
    changed: set[str] = set()
    for _order, ep_id, ep, _ns in members:
        want = ep_id in chosen
        if ep.default_route != want:
            state.endpoints[ep_id] = ep.model_copy(update={"default_route": want})
            changed.add(ep_id)
    return changed
