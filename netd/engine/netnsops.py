"""The service's netns operations: create a named namespace, remove namespaces with their endpoints.

A mixin of ``netd.engine.service.Service``: each operation takes the service lock and commits through
``ServiceCore._commit`` (``netd.engine.commit``), like every other change of the desired state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from netd.core.actions import Scope
from netd.core.errors import ConflictError, NotFoundError
from netd.core.model import DesiredState, Netns
from netd.core.request import parse_netns_create, parse_netns_network
from netd.drivers import CLUSTER_DRIVERS
from netd.engine.commit import ServiceCore
from netd.engine.networks import now

log = structlog.get_logger()


class NetnsOps(ServiceCore):
    async def create_netns(self, body: Any) -> Netns:
        name = parse_netns_create(body)
        mode = parse_netns_network(body)
        async with self.lock:
            if name in self.state.netns:
                raise ConflictError(f"netns {name!r} already exists", field="name")
            foreign = self.kernel.netns_foreign(name)
            if foreign is not None:
                raise ConflictError(
                    f"netns {name!r}: {foreign} already exists and was not made by netd; netd does not adopt "
                    f"it: remove it (ip netns del {name}) or choose another name",
                    field="Name",
                )
            ns = Netns(
                name=name, network="none" if mode == "none" else "host" if mode == "host" else None, created=now()
            )
            new = self.state.copy_for_change()
            new.netns[name] = ns
            await self._commit(new, Scope.of(netns=[name]), f"netns create {name}")
            log.info("netns_created", netns=name)
            return ns

    async def remove_netns(self, name: str) -> None:
        """Remove a netns and its endpoints (like removing a container)."""
        await self.remove_netns_many([name], strict=True)

    async def remove_netns_many(self, names: Sequence[str], strict: bool = False) -> dict[str, str]:
        """Remove these netns and their endpoints in one change: their veths go in one group delete.  Returns
        the names not found, with the error (``strict``: raise it instead, for a single name)."""
        async with self.lock:
            missing: dict[str, str] = {}
            found: list[str] = []
            for name in dict.fromkeys(names):
                try:
                    found.append(self.get_netns(name).name)
                except NotFoundError as e:
                    if strict:
                        raise
                    missing[name] = e.message
            if not found:
                return missing
            new = self.state.copy_for_change()
            gone: set[str] = set()
            for name in found:
                del new.netns[name]
                self.namespaces.forget(name)
                gone |= {ep.id for ep in self.index.in_target(f"netns:{name}")}
            # overlay networks lose their links here with their last endpoint: in the scope too
            nets = {new.endpoints[i].network for i in gone if _is_cluster(new, new.endpoints[i].network)}
            for ep_id in gone:
                del new.endpoints[ep_id]
            what = f"netns rm {found[0]}" if len(found) == 1 else f"netns rm {found[0]} and {len(found) - 1} more"
            await self._commit(new, Scope.of(endpoints=gone, netns=found, networks=nets), what)
            for name in found:
                log.info("netns_removed", netns=name)
            log.debug("netns_removed_batch", netns=len(found), endpoints=len(gone))
            return missing


def _is_cluster(state: DesiredState, net_id: str) -> bool:
    net = state.network_by_id(net_id)
    return net is not None and net.driver in CLUSTER_DRIVERS
