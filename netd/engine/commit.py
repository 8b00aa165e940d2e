"""The service's core: the one writer of the desired state, and the lookups every operation starts from.

A change is committed here: the new state is saved, made current and applied by the reconciler; if applying
fails for the objects the request touched, the previous state is restored and reconciled again.  The
operations (``netd.engine.service``, ``netd.engine.netnsops``, ``netd.engine.endpointbuild``) build the new
state under ``self.lock`` and hand it to ``_commit``; nothing else assigns ``self.state``.

Lock order: the service lock, then the reconciler lock (``applier.apply``), never the reverse (see
``netd.engine.service``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

import structlog

from netd.core import ipam, ports
from netd.core.actions import Scope
from netd.core.config import Settings
from netd.core.epindex import EndpointIndex
from netd.core.errors import InvalidError, KernelError, NotFoundError, StorageError
from netd.core.model import DesiredState, Endpoint, Netns, Network
from netd.core.request import Connect, NetworkCreate
from netd.drivers import DriverOptions
from netd.drivers.overlay import NO_CLUSTER
from netd.engine.locks import TimedLock
from netd.engine.networks import KernelReader, NetworkBuilder
from netd.engine.nsident import NamespaceIndex
from netd.engine.plan import scope_links, scope_targets
from netd.engine.state import StateStore

log = structlog.get_logger()


class Applier(Protocol):
    """The part of the reconciler the service needs (kept narrow so unit tests can fake it)."""

    async def apply(self, scope: Scope, reason: str) -> dict[str, str]: ...
    async def reconcile(self, reason: str) -> dict[str, str]: ...


class OverlayOps(Protocol):
    """Changes of networks that live in the cluster store (cluster mode only: ``netd.multihost``).  Called with
    the service lock held."""

    async def create_network(self, req: NetworkCreate, opts: DriverOptions) -> Network: ...
    async def remove_network(self, net: Network) -> None: ...
    async def connect(self, net: Network, req: Connect) -> Endpoint: ...
    async def disconnect(self, net: Network, ep: Endpoint, what: str) -> None: ...


class ServiceCore:
    def __init__(
        self, settings: Settings, store: StateStore, state: DesiredState, applier: Applier, kernel: KernelReader
    ) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self.applier = applier
        self.kernel = kernel
        self.networks = NetworkBuilder(settings, kernel)
        self.lock = TimedLock()  # taken before the reconciler's, never after (see the module docstring)
        # called with the new state after each successful commit (the daemon syncs the DNS listeners and the
        # netns resolv.conf files); its failures are logged, never undo the change
        # the second argument names the only namespaces whose endpoints changed (None: anything may have)
        self.on_change: Callable[[DesiredState, frozenset[str] | None], Awaitable[None]] | None = None
        # run beside the kernel apply of a change that names its namespaces (the daemon writes their resolv.conf
        # files in a thread: on ext4 a new file costs ~0.3-1 ms, as long as the rest of a connect's Python);
        # awaited before on_change, which then finds them written; a rollback's on_change puts them back
        self.before_apply: Callable[[DesiredState, frozenset[str]], Awaitable[None]] | None = None
        # config changes a reload could not apply (they need endpoints gone): shown in status as degraded
        self.pending: list[str] = []
        self.addresses = ipam.AddressBook()  # held addresses and scan starts, per network (see _adopt)
        # the endpoints of ``self.state`` by namespace, network, port ...: derived with it in _adopt
        self._index = EndpointIndex.build(state)
        self._undo: tuple[DesiredState, EndpointIndex] | None = None  # the state before the last, and its index
        # namespace identity by inode (looked up on the applier when used: narrow fakes need not have it)
        self.namespaces = NamespaceIndex(lambda p: self.kernel.ns_probe(p), lambda n: self.kernel.netns_path(n))
        self.overlay: OverlayOps | None = None  # cluster mode: overlay networks (netd.multihost)
        self.port_holders: Callable[[], list[ports.Holder]] | None = None  # cluster mode: services' ports

    # -- commit ------------------------------------------------------------------------------------------------

    async def _commit(self, new: DesiredState, scope: Scope, what: str) -> None:
        """Persist and apply ``new``; on failure for the touched objects, go back to the old state."""
        old = self.state
        # look at the links of both versions: the old one's are what a removal deletes, the new one's are
        # what a rollback deletes
        scope = replace(
            scope,
            links=scope.links | scope_links(old, scope) | scope_links(new, scope),
            targets=scope.targets | scope_targets(old, scope) | scope_targets(new, scope),
        )
        self._adopt(new, scope)
        netns = _touched_netns(old, new, scope)
        early = self._before_apply(new, netns)
        try:
            errors = await self.applier.apply(scope, reason=what)
        finally:
            if early is not None:
                await early
        touched = _scope_ids(scope)
        failed = {k: v for k, v in errors.items() if k in touched}
        if not failed:
            await self.notify_change(netns)
            return
        log.warning("change_rolled_back", change=what, errors=failed)
        try:
            self._adopt(old, scope)
        except StorageError as e:  # the client is told it failed: memory and kernel go back all the same; the
            # store still holds ``new`` as saved, so its next successful save writes the difference back
            log.error("rollback_not_stored", change=what, error=e.message)
            self._adopt(old, scope, persist=False)
        await self.applier.apply(scope, reason=f"rollback {what}")
        if early is not None:  # what before_apply wrote for ``new`` goes back to ``old``
            await self.notify_change(netns)
        raise KernelError(f"{what} failed and was rolled back: " + "; ".join(failed.values()))

    def _before_apply(self, state: DesiredState, netns: frozenset[str] | None) -> asyncio.Task[None] | None:
        """``before_apply`` started beside the apply (scoped changes only); its failures are logged."""
        if self.before_apply is None or not netns:
            return None
        hook = self.before_apply

        async def run() -> None:
            try:
                await hook(state, netns)
            except Exception as e:  # as notify_change: file trouble never fails a change
                log.error("change_hook_failed", error=str(e), kind=type(e).__name__, hook="before_apply")

        return asyncio.ensure_future(run())

    async def notify_change(self, netns: frozenset[str] | None = None) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(self.state, netns)
        except Exception as e:  # DNS/resolv.conf trouble must not fail (or undo) a committed change
            log.error("change_hook_failed", error=str(e), kind=type(e).__name__)

    async def reconcile_all(self) -> dict[str, str]:
        return await self.applier.reconcile("api")  # not under self.lock: a full pass may prune

    def _adopt(self, new: DesiredState, scope: Scope, persist: bool = True) -> None:
        """Persist ``new`` and make it current: the one way the desired state changes after start-up (so the
        address book sees every change of the endpoints).  A save that fails (StorageError) changes nothing."""
        before = self.state
        old_index = self.index
        rollback = self._undo is not None and self._undo[0] is new
        if rollback:  # the old state's index, as it was
            assert self._undo is not None
            index = self._undo[1]
        else:
            index = old_index.derive(new, scope.endpoints)
        if persist:  # the journal records only the endpoints the index names as changed; a rollback's order is
            # kept by a snapshot (see StateStore.save)
            self.store.save(new, index, snapshot=rollback)
        self._undo = (before, old_index)
        self.state, self._index = new, index
        self.addresses.changed(before, new, scope.endpoints)

    @property
    def index(self) -> EndpointIndex:
        """The endpoints of ``self.state`` by namespace, network, port ... (``netd.core.epindex``): derived with
        each change in ``_adopt``; built anew if the state was replaced any other way (tests)."""
        if self._index.state is not self.state:
            self._index = EndpointIndex.build(self.state)
        return self._index

    def kept_index(self, state: DesiredState) -> EndpointIndex | None:
        """The endpoint index of ``state`` if it is the current state (never builds one)."""
        return self.index if state is self.state else None

    def index_of(self, state: DesiredState) -> EndpointIndex:
        """The endpoint index of ``state``: kept for the current one, built for any other."""
        return self.index if self.state is state else EndpointIndex.build(state)

    # -- lookups -----------------------------------------------------------------------------------------------

    def _overlay(self) -> OverlayOps:
        if self.overlay is None:
            raise InvalidError(NO_CLUSTER, field="Driver")
        return self.overlay

    def get_network(self, name: str) -> Network:
        """By name, by id, or by any unique prefix of an id (Docker's order)."""
        net = self.state.networks.get(name)
        if net is not None:
            return net
        by_id = [n for n in self.state.networks.values() if n.id.startswith(name)] if name else []
        if len(by_id) == 1:
            return by_id[0]
        if len(by_id) > 1:
            raise NotFoundError(
                f"network id prefix {name!r} is ambiguous ({', '.join(sorted(n.name for n in by_id))}); "
                "give more characters or the name",
                field="name",
            )
        raise NotFoundError(f"network {name!r} not found; see netd-ctl network ls")

    def get_netns(self, name: str) -> Netns:
        ns = self.state.netns.get(name)
        if ns is None:
            raise NotFoundError(f"netns {name!r} not found; create it with: netd-ctl netns create {name}")
        return ns


def _touched_netns(old: DesiredState, new: DesiredState, scope: Scope) -> frozenset[str] | None:
    """The netns whose endpoints a scoped change touched; None when networks changed (any namespace may)."""
    if scope.networks is None or scope.networks or scope.endpoints is None or scope.netns is None:
        return None
    names = set(scope.netns)
    for ep_id in scope.endpoints:
        for state in (old, new):
            ep = state.endpoints.get(ep_id)
            if ep is not None and ep.netns is not None:
                names.add(ep.netns)
    return frozenset(names)


def _scope_ids(scope: Scope) -> set[str]:
    out: set[str] = set()
    for part in (scope.networks, scope.endpoints, scope.netns):
        if part is not None:
            out |= part
    return out
