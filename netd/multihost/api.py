"""``/v1/nodes`` (node ls / inspect / rm) and the cluster's metrics, for the daemon in cluster mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from netd.core.errors import InvalidError, NotFoundError

from .node import MultiHost

Json = Callable[..., web.Response]


def add_node_routes(routes: web.RouteTableDef, mh: MultiHost, json: Json) -> None:
    def cluster() -> Any:
        assert mh.cluster is not None
        return mh.cluster

    @routes.get("/v1/nodes")
    async def list_nodes(request: web.Request) -> web.Response:
        nodes = await cluster().membership.list_nodes()
        return json([n.to_dict() for n in sorted(nodes, key=lambda n: n.name)])

    @routes.get("/v1/nodes/{name}")
    async def inspect_node(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        for n in await cluster().membership.list_nodes():
            if n.name == name:
                return json(n.to_dict())
        raise NotFoundError(f"node {name!r} is not known to the cluster; see netd-ctl node ls", field="node")

    @routes.post("/v1/networks/{name}/rotate-key")
    async def rotate_key(request: web.Request) -> web.Response:  # issue 17: rotate an encrypted network's key now
        if mh.encryption is None:
            raise NotFoundError("encryption is not running on this node (cluster mode not started)")
        raw = request.query.get("wait", "50")
        try:
            wait = float(raw)
            if not 0 <= wait <= 3600:
                raise ValueError(raw)
        except ValueError:
            raise InvalidError(
                f"wait={raw!r}: give the seconds to wait for the rotation to finish, 0-3600", field="wait"
            ) from None
        return json(await mh.encryption.rotate(request.match_info["name"], wait))

    @routes.delete("/v1/nodes/{name}")
    async def remove_node(request: web.Request) -> web.Response:
        removed = await cluster().membership.remove_node(request.match_info["name"])
        return json({"Removed": removed})


class ClusterCollector(Collector):
    def __init__(self, mh: MultiHost) -> None:
        self.mh = mh

    def collect(self) -> Iterator[Metric]:
        st = self.mh.status()
        yield GaugeMetricFamily(
            "netd_cluster_connected",
            "1 while the cluster store (etcd) answers",
            value=float(bool(st["connected"])),
        )
        nodes = GaugeMetricFamily("netd_cluster_nodes", "Nodes the cluster knows, by state", labels=["state"])
        cache = self.mh.cluster.cache if self.mh.cluster is not None else None
        known = cache.nodes() if cache is not None else {}
        alive = cache.alive() if cache is not None else {}
        nodes.add_metric(["alive"], len(alive))
        nodes.add_metric(["down"], len([n for n in known if n not in alive]))
        yield nodes
        yield GaugeMetricFamily(
            "netd_cluster_remote_endpoints",
            "Remote overlay endpoints programmed on this node (FDB + neighbour entries)",
            value=self.mh.programmed(),
        )


def register_metrics(mh: MultiHost, registry: CollectorRegistry) -> None:
    registry.register(ClusterCollector(mh))
    mh.latency = Histogram(
        "netd_cluster_event_to_kernel_seconds",
        "From a cluster store event (watch) to the kernel programmed from it",
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        registry=registry,
    )
