"""Services' names for the resolver of an overlay network, on every node (pure: reads the cluster cache's
records): ``NAME`` -> the service's VIP on that network (``vip``) or every task's address on it (``dnsrr``);
``tasks.NAME`` -> every task's address on that network, on all alive nodes.  A task's own name is its endpoint's
and still resolves to itself (the resolver adds the endpoints' names first, so they keep their PTR records).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from netd.cluster.records import EndpointRecord, ServiceRecord
from netd.core.model import IPInterface

Names = tuple[list[str], IPInterface | None, IPInterface | None]


def service_names(
    network_id: str,
    services: Mapping[str, ServiceRecord],
    tasks: Iterable[EndpointRecord],
    alive: Iterable[str],
    prefixlen: int,
) -> list[Names]:
    from ipaddress import IPv4Interface

    up = set(alive)
    on_net: dict[str, list[EndpointRecord]] = {}
    for t in tasks:
        if t.service and t.network == network_id and t.node in up:
            on_net.setdefault(t.service, []).append(t)
    out: list[Names] = []
    for name in sorted(services):
        svc = services[name]
        if network_id not in svc.networks:
            continue
        mine = sorted(on_net.get(svc.name, []), key=lambda t: (t.created, t.id))
        vip = svc.vips.get(network_id)
        if svc.endpoint_mode == "vip" and vip is not None:
            out.append(([svc.name], IPv4Interface(f"{vip}/{prefixlen}"), None))
        for t in mine:
            names = [f"tasks.{svc.name}"] + ([svc.name] if svc.endpoint_mode == "dnsrr" else [])
            out.append((names, t.ipv4, t.ipv6))
    return out
