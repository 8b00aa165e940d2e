"""Services (issue 16), the control plane: ``service create/ls/inspect/rm`` in etcd and the check that a task
(``network connect --service NAME``) joins one of its service's networks.

A service in netd is a named group of overlay endpoints (its *tasks*) with a VIP per network and ports; netd
runs no containers, so a task is a namespace the user connected with ``--service``.  Reads go to etcd (what
another node created a moment ago is seen at once); the data plane (DNS, the VIP's load balancing) reads the
watch cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import structlog

from netd.cluster.ingress import DEFAULT_NAME, DEFAULT_SUBNET
from netd.cluster.networks import NetworkDraft
from netd.cluster.node import ClusterNode
from netd.cluster.records import EndpointRecord, OverlayNetwork, ServiceRecord, decode
from netd.cluster.services import ServiceDraft
from netd.core.errors import ConflictError, InvalidError, NotFoundError
from netd.core.model import DesiredState, Network
from netd.core.naming import new_id
from netd.core.request import Connect

from .service_spec import check_local_ports, check_published_free, parse_service_create

log = structlog.get_logger("netd.multihost")


class ServiceOps:
    def __init__(self, cluster: ClusterNode, get_state: Callable[[], DesiredState]) -> None:
        self.cluster = cluster
        self.get_state = get_state  # this node's state: its networks, to name a non-overlay one

    # -- create / rm -------------------------------------------------------------------------------------------

    async def create(self, body: Any) -> ServiceRecord:
        spec = parse_service_create(body)
        nets: list[OverlayNetwork] = []
        state: DesiredState = self.get_state()
        for name in spec.networks:
            rec = await self.cluster.networks.find(name)
            if rec is None:
                local = state.networks.get(name)
                if local is not None:
                    raise InvalidError(
                        f"Networks: {name!r} is a {local.driver} network; a service's tasks join overlay networks "
                        "only (netd-ctl network create -d overlay NAME)",
                        field="Networks",
                    )
                raise NotFoundError(
                    f"Networks: network {name!r} does not exist in the cluster; create it with "
                    f"netd-ctl network create -d overlay {name}, or see netd-ctl network ls",
                    field="Networks",
                )
            nets.append(rec)
        check_published_free(spec, await self.cluster.services.list())
        check_local_ports(spec, state)
        if any(p.published is not None and p.mode == "ingress" for p in spec.ports):
            await self._ingress()
        draft = ServiceDraft(
            id=new_id(),
            name=spec.name,
            networks=nets,
            ports=spec.ports,
            endpoint_mode=spec.endpoint_mode,
            stickiness=spec.stickiness,
            labels=spec.labels,
        )
        return await self.cluster.services.create(draft)

    async def _ingress(self) -> OverlayNetwork:
        """The ingress network, made with Docker's defaults (``ingress``, 10.0.0.0/24) when there is none yet;
        every node mirrors it from the watch."""
        networks = self.cluster.networks
        found = await networks.find_ingress()
        if found is not None:
            return found
        draft = NetworkDraft(id=new_id(), name=DEFAULT_NAME, subnet=DEFAULT_SUBNET, ingress=True)
        try:
            made = await networks.create(draft, self.cluster.pools)
        except ConflictError:
            found = await networks.find_ingress()  # another node made it at the same moment: use that one
            if found is not None:
                return found
            raise ConflictError(
                f"EndpointSpec.Ports: the routing mesh needs an ingress network and the name {DEFAULT_NAME!r} is "
                "taken by another network; create one with netd-ctl network create -d overlay --ingress NAME",
                field="EndpointSpec.Ports",
            ) from None
        log.info("ingress_network_created", network=made.name, subnet=DEFAULT_SUBNET)
        return made

    async def remove(self, name: str) -> None:
        """Refused while the service has tasks: they are namespaces the user owns, netd does not disconnect
        them behind their back (``docker service rm`` stops its containers; netd has none to stop)."""
        rec = await self._find(name)
        tasks = [t for t in await self._tasks() if t.service == rec.name and t.network in rec.networks]
        if tasks:
            where = ", ".join(sorted(f"{t.name or t.id[:12]} on {t.node}" for t in tasks))
            raise ConflictError(
                f"service {name!r} has {len(tasks)} task(s) ({where}); disconnect them first "
                "(netd-ctl network disconnect NET NETNS on their node; netd-ctl node rm for a node gone for good)",
                field="name",
            )
        await self.cluster.services.remove(rec)

    # -- reads -------------------------------------------------------------------------------------------------

    async def _find(self, name: str) -> ServiceRecord:
        rec = await self.cluster.services.find(name)
        if rec is None:
            raise NotFoundError(
                f"service {name!r} not found in the cluster; see netd-ctl service ls", field="name"
            )
        return rec

    async def _tasks(self) -> list[EndpointRecord]:
        kvs, _ = await self.cluster.store.get_prefix(self.cluster.keys.section("endpoints"))
        out = []
        for kv in kvs:
            try:
                rec = decode(EndpointRecord, kv.value)
            except ValueError:
                continue
            if rec.service:
                out.append(rec)
        return out

    async def context(self) -> tuple[dict[str, OverlayNetwork], set[str], list[EndpointRecord]]:
        kvs, _ = await self.cluster.store.get_prefix(self.cluster.keys.section("networks"))
        nets: dict[str, OverlayNetwork] = {}
        for kv in kvs:
            try:
                n = decode(OverlayNetwork, kv.value)
            except ValueError:
                continue
            nets[n.id] = n
        return nets, set(self.cluster.cache.alive()), await self._tasks()

    async def inspect(self, name: str) -> dict[str, Any]:
        rec = await self._find(name)
        nets, alive, tasks = await self.context()
        return service_view(rec, nets, alive, tasks)

    async def list(self) -> list[dict[str, Any]]:
        recs = await self.cluster.services.list()
        nets, alive, tasks = await self.context()
        return [service_view(r, nets, alive, tasks) for r in recs]

    # -- tasks -------------------------------------------------------------------------------------------------

    async def check_task(self, net: Network, req: Connect) -> None:
        """``network connect --service NAME NET``: NAME exists and is on NET (else nothing is changed)."""
        assert req.service is not None
        rec = self.cluster.cache.services().get(req.service) or await self.cluster.services.find(req.service)
        if rec is None:
            raise NotFoundError(
                f"service {req.service!r} not found in the cluster; create it first "
                f"(netd-ctl service create {req.service} --network {net.name})",
                field="service",
            )
        if net.id not in rec.networks:
            names = {n.id: n.name for n in self.cluster.cache.networks().values()}
            on = ", ".join(names.get(n, n[:12]) for n in rec.networks)
            raise InvalidError(
                f"service {rec.name!r} is not on network {net.name!r} (it is on {on}); connect its task to one "
                "of those",
                field="service",
            )


def _port_view(p: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"Protocol": p.protocol, "TargetPort": p.target, "PublishMode": p.mode}
    if p.published is not None:
        out["PublishedPort"] = p.published
    return out


def service_view(
    rec: ServiceRecord, nets: dict[str, OverlayNetwork], alive: set[str], tasks: Iterable[EndpointRecord]
) -> dict[str, Any]:
    """Docker's ``docker service inspect`` fields netd has, and netd's ``Tasks`` (node, network, address)."""
    ports = [_port_view(p) for p in rec.ports]
    espec: dict[str, Any] = {"Mode": rec.endpoint_mode, "Ports": ports}
    vips = []
    for net_id in rec.networks:
        vip = rec.vips.get(net_id)
        pool = nets[net_id].pool(4) if net_id in nets else None
        if vip is not None:
            vips.append({"NetworkID": net_id, "Addr": f"{vip}/{pool.subnet.prefixlen}" if pool else str(vip)})
    # a task's endpoint on the ingress network (the routing mesh's) is not one more task
    mine = sorted(
        (t for t in tasks if t.service == rec.name and t.network in rec.networks),
        key=lambda t: (t.node, t.name, t.id),
    )
    return {
        "ID": rec.id,
        "CreatedAt": rec.created,
        "CreatedOn": rec.created_on,
        "Spec": {
            "Name": rec.name,
            "Labels": dict(rec.labels),
            "TaskTemplate": {"Networks": [{"Target": n} for n in rec.networks]},
            "EndpointSpec": espec,
            "Options": {"stickiness": rec.stickiness},
        },
        "Endpoint": {"Spec": espec, "Ports": [p for p in ports if "PublishedPort" in p], "VirtualIPs": vips},
        "Networks": [{"ID": n, "Name": nets[n].name if n in nets else ""} for n in rec.networks],
        "Tasks": [
            {
                "ID": t.id,
                "Name": t.name,
                "Node": t.node,
                "NetworkID": t.network,
                "Network": nets[t.network].name if t.network in nets else "",
                "Addr": str(t.ipv4) if t.ipv4 is not None else "",
                "State": "running" if t.node in alive else "node-down",
            }
            for t in mine
        ],
    }
