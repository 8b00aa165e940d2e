"""Which namespaces get a resolver of their own, and what it answers (pure: no sockets, no kernel imports).

Endpoints of macvlan and ipvlan networks cannot reach any address of the host (macvlan isolates the parent from
its children; the gateway is a router outside the host), so the gateway resolver of bridge networks
(``netd.dns.answer``) cannot serve them.  As Docker's embedded resolver, netd answers them on ``127.0.0.11:53``
inside each such namespace (``netd.dns.nsresolver`` opens the sockets there).  A namespace's resolver answers
the names of every network the namespace is on that has names (its macvlan/ipvlan networks and its user-defined
bridges: Docker's resolver also serves all of a container's networks), and forwards other names upstream
unless all those networks are internal.  Only processes inside the namespace can send to its 127.0.0.11, so
every client is allowed (the gateway resolver allows only its subnets).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from netd.core.epindex import EndpointIndex
from netd.core.model import DesiredState, Endpoint, IPAddress, Network
from netd.dns.answer import NetIndex, RemoteNames, build_network_index
from netd.drivers import get_driver

NS_RESOLVER = IPv4Address("127.0.0.11")  # Docker's embedded resolver address


def serves_in_ns(net: Network) -> bool:
    """Endpoints of this network get a resolver inside their namespace (macvlan, ipvlan)."""
    return get_driver(net).features(net).ns_resolver


def has_names(net: Network) -> bool:
    feats = get_driver(net).features(net)
    return feats.dns or feats.ns_resolver


@dataclass
class NsIndex(NetIndex):
    """A namespace's resolver: the names of several networks; every client is inside the namespace."""

    def allows(self, peer: IPAddress) -> bool:
        return True


def wanted(state: DesiredState) -> dict[str, frozenset[str]]:
    """Namespace spelling (``Endpoint.target``) -> ids of the networks its resolver answers, for every
    namespace with an endpoint on a network that serves names in the namespace."""
    named = {n.id: serves_in_ns(n) for n in state.networks.values() if has_names(n)}
    nets: dict[str, set[str]] = {}
    needs: set[str] = set()
    for ep in state.endpoints.values():
        in_ns = named.get(ep.network)
        if in_ns is None:
            continue
        nets.setdefault(ep.target, set()).add(ep.network)
        if in_ns:
            needs.add(ep.target)
    return {t: frozenset(nets[t]) for t in needs}


class WantedTracker:
    """``wanted`` kept up to date from one state to the next at the cost of what changed: a commit replaces
    only the endpoints it touches (``copy_for_change`` shares the rest), so a connect costs the same with 10 or
    1000 endpoints (a full ``wanted`` is ~1.7 ms at 1000).  A change of the networks recomputes everything."""

    def __init__(self) -> None:
        self.seen: DesiredState | None = None
        self.current: dict[str, frozenset[str]] = {}
        self._nets: dict[str, Network] = {}
        self._eps: dict[str, Endpoint] = {}
        self._by_target: dict[str, dict[str, str]] = {}  # target -> endpoint id -> network id
        self._serial: int | None = None  # of the endpoint index of ``seen``, when given

    def an_endpoint(self, target: str) -> str | None:
        """The id of one endpoint of the namespace spelled ``target`` (of the last state seen)."""
        return next(iter(self._by_target.get(target) or {}), None)

    def update(self, state: DesiredState, index: EndpointIndex | None = None) -> dict[str, frozenset[str] | None]:
        """The targets whose wanted networks changed: the new set, or None when it needs no resolver now.
        ``index``: the endpoint index of ``state``; it names the endpoints changed since the last state seen
        (no identity pass over every endpoint)."""
        before = self.current
        ours = index is not None and index.state is state
        since = index.changes_since(self._serial) if index is not None and ours else None
        self._serial = index.serial if index is not None and ours else None
        nets = {n.id: n for n in state.networks.values()}
        if not any(serves_in_ns(n) for n in nets.values()):  # no macvlan/ipvlan network: nothing to track
            self.seen, self.current, self._nets, self._eps, self._by_target = None, {}, {}, {}, {}
            return dict.fromkeys(before)
        same_nets = nets.keys() == self._nets.keys() and all(nets[k] is v for k, v in self._nets.items())
        if self.seen is None or not same_nets:
            self._nets = nets
            self._eps = dict(state.endpoints)
            self._by_target = {}
            for ep in state.endpoints.values():
                self._by_target.setdefault(ep.target, {})[ep.id] = ep.network
            self.current = wanted(state)
            touched = set(before) | set(self.current)
        else:
            old, new = self._eps, state.endpoints
            if since is not None:
                ids = set(since)
            else:
                ids = set(old.keys() ^ new.keys())
                ids.update(k for k in old.keys() & new.keys() if old[k] is not new[k])
            touched = set()
            for ep_id in ids:
                gone = old.pop(ep_id, None)
                if gone is not None:
                    touched.add(gone.target)
                    self._by_target.get(gone.target, {}).pop(ep_id, None)
                came = new.get(ep_id)
                if came is not None:
                    old[ep_id] = came
                    touched.add(came.target)
                    self._by_target.setdefault(came.target, {})[ep_id] = came.network
            self.current = dict(before)
            for target in touched:
                eps = self._by_target.get(target) or {}
                if not eps:
                    self._by_target.pop(target, None)
                named = {n for n in eps.values() if n in nets and has_names(nets[n])}
                if any(serves_in_ns(nets[n]) for n in named):
                    self.current[target] = frozenset(named)
                else:
                    self.current.pop(target, None)
        self.seen = state
        return {t: self.current.get(t) for t in touched if self.current.get(t) != before.get(t)}


def ns_index(
    state: DesiredState,
    network_ids: Iterable[str],
    label: str,
    remote: RemoteNames | None = None,
    cache: dict[str, NetIndex] | None = None,
) -> NsIndex:
    """The union of the networks' indexes (names, reverse names, subnets); ``cache``: the networks' indexes of
    this ``state`` already built (shared by every namespace on the network)."""
    out = NsIndex(network=label, subnets=(), forward=False)
    cache = {} if cache is None else cache
    for net_id in sorted(network_ids):
        idx = cache.get(net_id)
        if idx is None:
            net = state.network_by_id(net_id)
            if net is None:
                continue
            idx = cache[net_id] = build_network_index(net, state, remote)
        out.subnets += idx.subnets
        out.forward = out.forward or idx.forward
        for name, (v4, v6) in idx.names.items():
            have4, have6 = out.names.setdefault(name, ([], []))
            have4.extend(a for a in v4 if a not in have4)
            have6.extend(a for a in v6 if a not in have6)
        out.ptr.update(idx.ptr)
    return out
