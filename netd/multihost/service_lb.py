"""Services' VIP load balancing on this node: the LB rules (``netd.firewall.lb``) inside every local namespace
that has an endpoint on a service's network, as Docker does in each container's sandbox.

Why in the namespace and not on the node's overlay bridge: a VIP DNAT'd in the node's own stack would need a
per-node source address on every overlay network to bring replies from tasks on other nodes back through it
(the bridge's address is the network's gateway, the same on every node, so a remote task would answer its own
node).  DNAT'd in the client's namespace (output hook), the connection leaves already addressed to the task,
crosses the overlay like any endpoint-to-endpoint traffic, and the reply is un-DNAT'd where the connection
began; no ARP for the VIP is ever needed, and no masquerade changes the client's address.

The desired rules of a namespace come from the cluster cache (services, their tasks on alive nodes) and this
node's state (which overlay networks the namespace is on).  A pass runs on every cluster change that touches
services or tasks, on every local commit and on a timer (drift: each namespace's table is checked with one
small read, ``LbBackend.in_sync``, and replaced when flushed or gone).  Changes are deltas; a task that goes is
out of the spread at once and its DNAT'd conntrack entries are flushed (``lb.py``).  A namespace recreated at
the same path (a reboot, a replay) is a new namespace: its backend is made again, bound to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from netd.cluster.cache import Change
from netd.cluster.records import EndpointRecord, ServiceRecord
from netd.core.model import DesiredState, Endpoint
from netd.firewall.lb import LbBackend
from netd.firewall.lb_model import (
    Backend,
    LbInputError,
    LbNode,
    LbRuleset,
    PortSpec,
    Service,
    build_lb,
)

log = structlog.get_logger("netd.multihost")

CHECK_EVERY = 2.0  # seconds between drift checks of the namespaces' LB tables


async def pass_loop(
    wake: asyncio.Event, every: float, sync: Callable[[bool], Awaitable[object]], failed: str
) -> None:
    """Run ``sync`` on every ``wake`` and at least every ``every`` seconds; ``sync(True)`` (a drift check:
    read the kernel back) at most every ``every`` seconds.  A failed pass is logged as ``failed``; the next
    one tries again."""
    next_check = 0.0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), every)
        wake.clear()
        check = time.monotonic() >= next_check
        if check:
            next_check = time.monotonic() + every
        try:
            await sync(check)
        except Exception:
            log.exception(failed)


def touches_services(change: Change) -> bool:
    """A cluster change that can change services' names or load balancing."""
    if change.resync:
        return True
    for key, parsed in change.parsed.items():
        if parsed.kind in ("service", "alive"):
            return True
        if parsed.kind == "endpoint":
            rec = change.puts.get(key) or change.deletes.get(key)
            if isinstance(rec, EndpointRecord) and rec.service:
                return True
    return False


def namespace_lb(
    networks: Iterable[str],
    net_names: Mapping[str, str],
    services: Iterable[ServiceRecord],
    tasks: Iterable[EndpointRecord],
    alive: Iterable[str],
    node: str,
) -> LbRuleset:
    """The LB rules of one namespace on the overlay networks ``networks`` (ids): for each ``vip`` service on
    one of them, its VIP on those networks spread over its tasks' addresses there (alive nodes only)."""
    on = set(networks)
    up = set(alive)
    by_service: dict[str, list[EndpointRecord]] = {}
    for t in tasks:
        if t.service and t.node in up and t.network in on and t.ipv4 is not None:
            by_service.setdefault(t.service, []).append(t)
    models = []
    for svc in services:
        nets = [n for n in svc.networks if n in on and n in svc.vips]
        if svc.endpoint_mode != "vip" or not nets or not svc.ports:
            continue
        ports = tuple({(p.protocol, p.target): PortSpec(p.protocol, None, p.target) for p in svc.ports}.values())
        backends = tuple(
            Backend(task=t.id, address=t.ipv4.ip, network=net_names.get(t.network, t.network), node=t.node)
            for t in by_service.get(svc.name, [])
            if t.ipv4 is not None and t.network in nets
        )
        models.append(
            Service(
                name=svc.name,
                vips=tuple((net_names.get(n, n), svc.vips[n]) for n in nets),
                ports=ports,
                endpoint_mode="vip",
                stickiness=svc.stickiness,
                backends=backends,
            )
        )
    return build_lb(models, LbNode(node))


@dataclass
class _Ns:
    path: str
    inode: int
    backend: LbBackend
    applied: LbRuleset | None = None
    failed: str = ""  # the last apply error, logged once


class ServiceLb:
    def __init__(
        self,
        node: str,
        get_state: Callable[[], DesiredState],
        netns_path: Callable[[Endpoint], str],
        cluster_view: Callable[[], tuple[dict[str, ServiceRecord], list[EndpointRecord], set[str]]],
        make_backend: Callable[[str], LbBackend],
    ) -> None:
        self.node = node
        self.get_state = get_state
        self.netns_path = netns_path
        self.cluster_view = cluster_view
        self.make_backend = make_backend
        self.namespaces: dict[str, _Ns] = {}  # by path
        self._wake = asyncio.Event()
        self.passes = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await pass_loop(self._wake, CHECK_EVERY, self.sync, "service_lb_pass_failed")

    def desired(self) -> dict[str, LbRuleset]:
        """Namespace path -> its LB rules (namespaces without any service VIP are absent)."""
        state = self.get_state()
        services, tasks, alive = self.cluster_view()
        overlay = {n.id: n.name for n in state.networks.values() if n.driver == "overlay"}
        on: dict[str, set[str]] = {}
        for ep in state.endpoints.values():
            if ep.network in overlay:
                on.setdefault(self.netns_path(ep), set()).add(ep.network)
        vip_nets = {n for s in services.values() if s.endpoint_mode == "vip" for n in s.networks}
        out: dict[str, LbRuleset] = {}
        by_nets: dict[frozenset[str], LbRuleset | None] = {}  # namespaces on the same networks: built once
        for path, nets in on.items():
            key = frozenset(nets & vip_nets)
            if not key:
                continue
            if key not in by_nets:
                try:
                    by_nets[key] = namespace_lb(key, overlay, services.values(), tasks, alive, self.node)
                except LbInputError as e:  # a record another netd version wrote: skip it, loudly
                    log.error("service_lb_bad_service", namespace=path, error=str(e))
                    by_nets[key] = None
            rs = by_nets[key]
            if rs is not None and not rs.empty:
                out[path] = rs
        return out

    async def sync(self, check: bool = False) -> int:
        """Make every namespace's LB table its desired one; ``check``: also read each back (drift).  Returns
        how many namespaces were changed."""
        self.passes += 1
        want = self.desired()
        changed = 0
        for path in [p for p in self.namespaces if p not in want]:
            await self._drop(path, remove=True)
            changed += 1
        for path, rs in want.items():
            try:
                inode = os.stat(path).st_ino
            except OSError:  # the namespace is gone or not made yet: the reconciler replays it, then we come
                await self._drop(path, remove=False)
                continue
            ns = self.namespaces.get(path)
            if ns is not None and ns.inode != inode:  # recreated at the same path (reboot, replay)
                await self._drop(path, remove=False)
                ns = None
            if ns is None:
                ns = self.namespaces[path] = _Ns(path, inode, self.make_backend(path))
            if ns.applied == rs and not (check and not await ns.backend.in_sync(rs)):
                continue
            try:
                done = await ns.backend.apply(rs)
            except Exception as e:
                ns.applied = None
                if ns.failed != str(e):  # once per error, not every pass (a refusal stays until the spec changes)
                    log.error("service_lb_apply_failed", namespace=path, error=str(e))
                ns.failed = str(e)
                continue
            ns.applied, ns.failed = rs, ""
            if done.mode != "none":
                changed += 1
                log.info(
                    "service_lb_applied",
                    namespace=path,
                    mode=done.mode,
                    commands=done.commands,
                    flushed=done.flushed,
                )
        return changed

    async def _drop(self, path: str, remove: bool) -> None:
        ns = self.namespaces.pop(path, None)
        if ns is None:
            return
        if remove:
            with contextlib.suppress(Exception):  # the namespace may be gone meanwhile
                await ns.backend.remove_all()
        await asyncio.get_running_loop().run_in_executor(None, ns.backend.close)

    async def close(self) -> None:
        for path in list(self.namespaces):
            await self._drop(path, remove=False)
