"""The services' data planes as cluster mode builds them on the daemon's firewall backend: the VIP load
balancer inside the local namespaces (``service_lb.py``) and the routing mesh in the node's own namespace
(``mesh.py``), both reading the cluster cache."""

from __future__ import annotations

from collections.abc import Callable

from netd.cluster.node import ClusterNode
from netd.cluster.records import EndpointRecord, ServiceRecord
from netd.core.model import DesiredState, Endpoint

from .mesh import Mesh
from .service_lb import ServiceLb


def service_lb(
    cluster: ClusterNode, get_state: Callable[[], DesiredState], path: Callable[[Endpoint], str], kind: str
) -> ServiceLb:
    from netd.firewall.lb import make_lb_backend

    cache = cluster.cache

    def view() -> tuple[dict[str, ServiceRecord], list[EndpointRecord], set[str]]:
        return cache.services(), [r for r in cache.endpoints() if r.service], set(cache.alive())

    return ServiceLb(cluster.cfg.node_name, get_state, path, view, lambda p: make_lb_backend(kind, netns=p))


def routing_mesh(
    cluster: ClusterNode, get_state: Callable[[], DesiredState], kind: str, on_address: Callable[[str], None]
) -> Mesh:
    from netd.firewall.lb import make_lb_backend

    return Mesh(cluster, get_state, make_lb_backend(kind), on_address)
