"""The single writer: observe the owned kernel objects, plan the difference, apply the plan in its order.

Nothing happens outside the plan: namespaces and their ownership markers, links, sysctls (route_localnet
included), the firewall and the conntrack flushes after it are all plan actions, so ``netd-ctl plan``/``check``
show every effect a reconcile would have.  Triggers: start-up (the replay after a reboot is a reconcile from an
empty kernel), every API change (scoped to the objects it touched), netlink events about owned links, a firewall
check every second, and a timer (``netd.engine.triggers``).  Each action's failure is recorded against the object
it belongs to and the rest still goes ahead.  The counters live in ``netd.ops.metrics`` (a ``Recorder``); what
a pass observes, in ``netd.engine.observe``.

Lock order: the service lock, then the reconciler lock, never the reverse.  The service holds its lock while it
asks the reconciler to apply a change; so nothing here calls back into the service (``prune``) while holding
``self.lock``: a full reconcile prunes the endpoints whose foreign namespace is gone first, without the lock,
and only then takes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from netd.core.actions import (
    Action,
    ApplyFirewall,
    DeleteChildren,
    DeleteLinks,
    DriverAction,
    EnsureBridge,
    EnsureChild,
    EnsureNetns,
    EnsureParent,
    EnsureShim,
    EnsureVeth,
    FlushConntrack,
    MarkNetns,
    RemoveAdoptedAddresses,
    RemoveNetns,
    RestoreSysctls,
    Scope,
    SetSysctl,
    describe,
    owners,
)
from netd.core.config import Settings
from netd.core.epindex import EndpointIndex
from netd.core.errors import NetdError
from netd.core.model import DesiredState
from netd.core.ruleset import Ruleset
from netd.engine.hostchanges import HostChanges, record_adopted, remove_adopted, restore_sysctls
from netd.engine.locks import TimedLock
from netd.engine.nsremoval import NetnsRemovals
from netd.engine.observe import Observer, ReconcilerObserve
from netd.engine.plan import IP6_FORWARD, plan, wants_ip6_forward
from netd.engine.waves import waves
from netd.firewall.base import FirewallBackend
from netd.firewall.portmaps import PortMaps
from netd.firewall.rules import build_ruleset
from netd.kernel.facade import Kernel

__all__ = ["Observer", "Reconciler", "Recorder", "RunReport"]

log = structlog.get_logger()


@dataclass(frozen=True)
class RunReport:
    """One reconcile, for the counters."""

    reason: str
    applied: tuple[str, ...]  # the type names of the actions applied, in order
    errors: dict[str, str]
    seconds: float
    full: bool


class Recorder(Protocol):
    def reconciled(self, run: RunReport) -> None: ...
    def firewall_repaired(self) -> None: ...


class Reconciler(ReconcilerObserve):
    def __init__(
        self,
        settings: Settings,
        kernel: Kernel,
        firewall: FirewallBackend,
        get_state: Callable[[], DesiredState],
        prune: Callable[[set[str], str], Awaitable[None]],
        stats: Recorder,
    ) -> None:
        self.settings = settings
        self.kernel = kernel
        self.firewall = firewall
        self.get_state = get_state
        self.prune = prune
        self.stats = stats
        self.lock = TimedLock()  # held_since feeds the watchdog's progress check (netd.ops.progress)
        self.changes = HostChanges.load(settings.state_dir)  # what to put back on things that are not netd's
        self._applied_rules: Ruleset | None = None
        self._port_maps = PortMaps()  # the published-port maps, updated by the endpoints a change touched
        # the endpoint index the service keeps with a state (None: not the current one; then the port maps
        # check every endpoint's identity); the daemon wires in ServiceCore.kept_index
        self.index_of: Callable[[DesiredState], EndpointIndex | None] = lambda state: None
        self.removals = NetnsRemovals(kernel)  # a pass's namespace removals, unmounted together
        self.wake: Callable[[], None] = lambda: None  # asks for another full pass soon (netd.engine.triggers)
        self.observers: list[Observer] = []  # cluster mode adds the overlay's (netd.multihost)

    @property
    def applied_rules(self) -> Ruleset | None:
        return self._applied_rules

    # -- plan ----------------------------------------------------------------------------------------------------

    async def _plan(self, state: DesiredState, scope: Scope) -> list[Action]:
        rules = build_ruleset(
            state, ip_forward=self.settings.ip_forward, ports=self._port_maps, index=self.index_of(state)
        )
        observed = await self._observe(state, scope, rules)
        return plan(
            state,
            observed,
            ns_path=self.ns_path_of,
            ip_forward=self.settings.ip_forward,
            ip6_forward=wants_ip6_forward(state, self.settings.ip6_forward),
            scope=scope,
        )

    async def dry_run(self) -> list[dict[str, str]]:
        """What a full reconcile would do now, without doing it (``netd-ctl plan`` / ``check``)."""
        async with self.lock:
            state = self.get_state()
            actions = await self._plan(state, Scope.everything())
            gone = self._gone_foreign(state)
        out = [
            {"action": type(a).__name__, "owner": a.owner, "description": describe(a)}
            for a in actions
            if a.owner not in gone
        ]
        for ep in sorted(gone):
            desc = f"forget endpoint {ep} (its namespace is gone)"
            out.append({"action": "ForgetEndpoint", "owner": ep, "description": desc})
        return out

    # -- apply ---------------------------------------------------------------------------------------------------

    async def apply(self, scope: Scope, reason: str) -> dict[str, str]:
        """Reconcile the objects in ``scope``; returns errors by owner id (empty: all applied)."""
        async with self.lock:
            try:
                return await self._reconcile(scope, reason)
            finally:  # an open socket keeps a namespace alive after it is deleted (see kernel.facade)
                self.kernel.release_netns_sockets()

    async def reconcile(self, reason: str = "timer") -> dict[str, str]:
        """A full pass.  Never call it while holding the service lock (the prune below takes it)."""
        await self._prune_gone()
        return await self.apply(Scope.everything(), reason)

    async def _prune_gone(self) -> None:
        """Forget the endpoints whose foreign namespace is gone, through the service (its lock only: the
        reconciler lock is not held here, see the lock order above)."""
        before = self.get_state()
        gone = self._gone_foreign(before)
        if not gone:
            return
        await self.prune(gone, "namespace gone")
        for ep_id in gone:  # a cached socket would keep the dead namespace (and its links) alive
            self.kernel.forget_netns(self.ns_path_of(before.endpoints[ep_id]))

    async def _reconcile(self, scope: Scope, reason: str) -> dict[str, str]:
        t0 = time.perf_counter()
        state = self.get_state()
        gone = self._gone_foreign(state) if scope.is_full else set()
        if gone:  # went after reconcile() pruned: the next pass prunes it (never from under this lock)
            self.wake()
        actions = [a for a in await self._plan(state, scope) if a.owner not in gone]
        errors: dict[str, str] = {}
        applied: list[str] = []
        self.removals.start(actions)
        # a new veth is announced (gratuitous ARP / unsolicited NA) only when an API change made its endpoint:
        # a full pass recreates known endpoints, with the MAC and addresses peers already have
        announce = not scope.is_full
        for step in waves(actions, self._ns_key):  # creates for different namespaces run together
            if len(step) == 1:
                applied += await self._run_unit(step[0], errors, announce)
            else:
                units = (self._run_unit(unit, errors, announce) for unit in step)
                for done in await asyncio.gather(*units):
                    applied += done
        seconds = time.perf_counter() - t0
        self.stats.reconciled(RunReport(reason, tuple(applied), errors, seconds, scope.is_full))
        level = log.info if applied or errors else log.debug
        level(
            "reconcile_done", reason=reason, changes=len(applied), errors=len(errors), ms=round(seconds * 1000, 1)
        )
        return errors

    def _ns_key(self, action: Action) -> str:
        """The namespace an action creates something for (see waves)."""
        if isinstance(action, EnsureVeth):
            return action.spec.netns.path
        name = getattr(action, "name", "")
        return self.kernel.netns_path(name) if name else ""

    async def _run_unit(self, unit: list[Action], errors: dict[str, str], announce: bool = True) -> list[str]:
        """The unit's actions in order; the type names of those applied."""
        return [type(a).__name__ for a in unit if await self._run(a, errors, announce)]

    async def _run(self, action: Action, errors: dict[str, str], announce: bool = True) -> bool:
        requires = getattr(action, "requires", "")
        if requires and requires in errors:
            return False
        try:
            await self._execute(action, announce)
        except (NetdError, OSError) as e:
            msg = e.message if isinstance(e, NetdError) else f"{describe(action)}: {e}"
            if getattr(action, "best_effort", False):  # it works without; say so, do not fail the owner
                log.warning("action_failed", action=describe(action), error=msg, best_effort=True)
                return False
            for owner in owners(action):
                errors[owner] = msg
            log.error("action_failed", action=describe(action), error=msg)
            return False
        log.info("action_applied", action=describe(action))
        return True

    async def _execute(self, action: Action, announce: bool = True) -> None:
        k = self.kernel
        match action:
            case EnsureNetns(name=name, host=host):
                if host:  # only then: narrow fake kernels need not know the flag
                    await k.ensure_netns(name, share=True)
                else:
                    await k.ensure_netns(name)
            case RemoveNetns(name=name):
                await self.removals.remove(name)
            case MarkNetns(name=name, owned=owned):
                k.mark_netns(name, owned)
            case EnsureBridge(spec=spec):
                if spec.adopt:  # recorded first, so the addresses netd adds can be taken off again
                    await record_adopted(self.changes, k, spec)
                await k.ensure_bridge(spec)
            case EnsureVeth(spec=spec, seen_missing=seen_missing, reconfigure=reconfigure, repair_peer=repair):
                if reconfigure:  # only then: narrow fake kernels need not know the flag
                    await k.ensure_veth(spec, reconfigure=True)
                elif not announce:
                    await k.ensure_veth(spec, seen_missing=seen_missing, announce=False)
                else:
                    await k.ensure_veth(spec, seen_missing=seen_missing)
                if repair:  # the namespace side drifted (seen by a full pass or check)
                    await k.repair_peer(spec)
            case DeleteLinks(ifnames=names):
                await k.delete_links(names)
            case SetSysctl(key=key, value=value):
                if key == IP6_FORWARD or key.endswith("/accept_ra"):  # host-wide: recorded first, put back later
                    self.changes.will_set(key, (await k.get_sysctl(key)).strip(), value)
                await k.set_sysctl(key, value)
            case RestoreSysctls():
                await restore_sysctls(self.changes, k)
            case RemoveAdoptedAddresses(owner=net_id):
                await remove_adopted(self.changes, k, net_id)
            case EnsureParent(spec=spec):
                await k.ensure_parent(spec)
            case EnsureShim(spec=spec):
                await k.ensure_shim(spec)
            case EnsureChild(spec=spec):
                await k.ensure_child(spec)
            case DeleteChildren(children=children):
                await k.delete_children(children)
            case ApplyFirewall(rules=rules, reason=why):
                await self.firewall.apply(rules)
                self._applied_rules = rules
                log.info("firewall_applied", backend=self.firewall.name, why=why)
            case FlushConntrack(udp=udp):
                await k.flush_udp_conntrack(udp)
            case DriverAction():
                await action.apply(k)

    # -- the firewall check (between reconciles) ------------------------------------------------------------------

    async def repair_firewall(self) -> None:
        """Notice a flushed ruleset (nft flush ruleset, a firewall reload) and put netd's rules back."""
        if self._applied_rules is None or self.lock.locked():
            return
        rules = self._applied_rules
        if await self._fw_in_sync(rules):
            return
        async with self.lock:
            try:
                await self.firewall.apply(rules)
                self.stats.firewall_repaired()
                log.warning("firewall_repaired", backend=self.firewall.name)
            except NetdError as e:
                log.error("firewall_repair_failed", error=e.message)
