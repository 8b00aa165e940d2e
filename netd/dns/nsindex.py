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

from netd.core.model import DesiredState, IPAddress, Network
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


def ns_index(
    state: DesiredState, network_ids: Iterable[str], label: str, remote: RemoteNames | None = None
) -> NsIndex:
    """The union of the networks' indexes (names, reverse names, subnets)."""
    out = NsIndex(network=label, subnets=(), forward=False)
    for net_id in sorted(network_ids):
        net = state.network_by_id(net_id)
        if net is None:
            continue
        idx = build_network_index(net, state, remote)
        out.subnets += idx.subnets
        out.forward = out.forward or idx.forward
        for name, (v4, v6) in idx.names.items():
            have4, have6 = out.names.setdefault(name, ([], []))
            have4.extend(a for a in v4 if a not in have4)
            have6.extend(a for a in v6 if a not in have6)
        out.ptr.update(idx.ptr)
    return out
