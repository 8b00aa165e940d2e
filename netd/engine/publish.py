"""A new endpoint's published ports: refused where the network cannot publish, checked against every port the
other endpoints (and, in cluster mode, the services) already publish, host port 0 picked from the range."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from netd.core import ports
from netd.core.config import Settings
from netd.core.epindex import EndpointIndex, Table
from netd.core.errors import InvalidError
from netd.core.model import Network, PortMapping
from netd.drivers import get_driver


def plan_published(
    index: EndpointIndex,
    net: Network,
    wanted: list[PortMapping],
    families: frozenset[int],
    port_holders: Callable[[], list[ports.Holder]] | None,
    settings: Settings,
) -> list[PortMapping]:
    """Published ports of a new endpoint: checked against every other endpoint's, host port 0 picked."""
    if not get_driver(net).features(net).published_ports or net.internal:
        why = "is internal (no traffic reaches it from outside the host, as in Docker)"
        if not get_driver(net).features(net).published_ports:
            why = f"is a {net.driver} network (its endpoints are reachable at their own addresses)"
        raise InvalidError(
            f"network {net.name!r} {why}: it cannot publish ports; connect without -p, or publish on a "
            "non-internal bridge network",
            field="publish",
        )
    ports.check_families(wanted, families, net.name)
    holders: list[ports.Holder] = []
    can_clash = ports.clash_filter(wanted)  # only those: 1000 published ports cost 9% of a connect
    # the endpoints that publish the same (proto, host port) as an explicit one, or the proto of a picked one
    # (``clash_filter``), from the index: a connect with -p costs the same with 10 or 1000 published ports
    buckets: list[tuple[Table, Hashable]] = [("port", (m.proto, m.host_port)) for m in wanted if m.host_port]
    buckets += [("proto", m.proto) for m in wanted if not m.host_port]
    state = index.state
    for ep in index.union(buckets):
        other = state.network_by_id(ep.network)
        if other is None:
            continue
        fams = frozenset(a.version for a in (ep.ipv4, ep.ipv6) if a is not None)
        who = f"{'netns ' + repr(ep.netns) if ep.netns else ep.netns_path} on network {other.name!r}"
        holders.extend(ports.Holder(m, fams, who) for m in ep.ports if can_clash(m))
    if port_holders is not None:  # cluster mode: services' published ports (every node answers them)
        holders.extend(port_holders())
    return ports.plan_ports(wanted, families, holders, settings.port_range)
