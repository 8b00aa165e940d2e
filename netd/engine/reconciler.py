"""The single writer: observe the owned kernel objects, plan the difference, apply the plan in its order.

Nothing happens outside the plan: namespaces and their ownership markers, links, sysctls (route_localnet
included), the firewall and the conntrack flushes after it are all plan actions, so ``netd-ctl plan``/``check``
show every effect a reconcile would have.  Triggers: start-up (the replay after a reboot is a reconcile from an
empty kernel), every API change (scoped to the objects it touched), netlink events about owned links, a firewall
check every second, and a timer (``netd.engine.triggers``).  Each action's failure is recorded against the object
it belongs to and the rest still goes ahead.  The counters live in ``netd.ops.metrics`` (a ``Recorder``).

Lock order: the service lock, then the reconciler lock, never the reverse.  The service holds its lock while it
asks the reconciler to apply a change; so nothing here calls back into the service (``prune``) while holding
``self.lock``: a full reconcile prunes the endpoints whose foreign namespace is gone first, without the lock,
and only then takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

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
    FirewallSeen,
    FlushConntrack,
    MarkNetns,
    Observed,
    RemoveAdoptedAddresses,
    RemoveNetns,
    RestoreSysctls,
    Scope,
    SetSysctl,
    describe,
    owners,
)
from netd.core.config import Settings
from netd.core.errors import NetdError
from netd.core.linkspec import ObservedHost
from netd.core.model import DesiredState, Endpoint
from netd.core.ruleset import Ruleset
from netd.drivers import DRIVERS
from netd.engine.hostchanges import HostChanges, record_adopted, remove_adopted, restore_sysctls
from netd.engine.locks import TimedLock
from netd.engine.nsremoval import NetnsRemovals
from netd.engine.plan import IP6_FORWARD, localnet_keys, plan, scope_links, scope_targets, wants_ip6_forward
from netd.engine.waves import waves
from netd.firewall.base import FirewallBackend
from netd.firewall.portmaps import PortMaps
from netd.firewall.rules import build_ruleset
from netd.kernel.facade import Kernel

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


# a driver's own observation (say the overlay's VXLAN devices and the cluster's remote endpoints): called with
# the state, the scope and the observed host links; returns entries for ``Observed.extra``
Observer = Callable[[DesiredState, Scope, ObservedHost], Awaitable[dict[str, Any]]]


class Reconciler:
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
        self.removals = NetnsRemovals(kernel)  # a pass's namespace removals, unmounted together
        self.wake: Callable[[], None] = lambda: None  # asks for another full pass soon (netd.engine.triggers)
        self.observers: list[Observer] = []  # cluster mode adds the overlay's (netd.multihost)

    @property
    def applied_rules(self) -> Ruleset | None:
        return self._applied_rules

    def ns_path_of(self, ep: Endpoint) -> str:
        return self.kernel.netns_path(ep.netns) if ep.netns is not None else (ep.netns_path or "")

    def _target_path(self, target: str) -> str:
        kind, _, value = target.partition(":")
        return self.kernel.netns_path(value) if kind == "netns" else value

    # -- observe -----------------------------------------------------------------------------------------------

    async def _observe(self, state: DesiredState, scope: Scope, rules: Ruleset) -> Observed:
        kernel = self.kernel
        host: ObservedHost = await kernel.observe(
            None if scope.is_full else scope.links | scope_links(state, scope)
        )
        # a scoped reconcile looks at its own namespaces only: no directory listing per connect
        owned = kernel.owned_netns(scope.netns)
        alive = {
            n for n in set(state.netns) | owned if scope.has_netns(n) and kernel.ns_alive(kernel.netns_path(n))
        }
        sysctls: dict[str, str] = {}
        accept_ra: dict[str, str] = {}
        # forwarding is read on every reconcile (a file read): the first IPv6 network turns it on at once
        if self.settings.ip_forward:
            sysctls["net.ipv4.ip_forward"] = (await kernel.get_sysctl("net.ipv4.ip_forward")).strip()
        if wants_ip6_forward(state, self.settings.ip6_forward):
            sysctls[IP6_FORWARD] = (await kernel.get_sysctl(IP6_FORWARD)).strip()
            if sysctls[IP6_FORWARD] != "1":  # rare: look at every link, not only the scope's
                accept_ra = await self._uplink_accept_ra(await kernel.observe())
        for key in localnet_keys(state, scope).values():
            sysctls[key] = await self._read_sysctl(key)  # "" when the bridge is missing: its Ensure comes first
        targets = scope_targets(state, scope) | scope.targets
        children = await kernel.observe_children({self._target_path(t) for t in targets}) if targets else {}
        peers = (
            await kernel.observe_peers(self._peer_targets(state, scope))
            if scope.peers is None or scope.peers
            else {}
        )
        in_sync = await self._fw_in_sync(rules) if scope.is_full else True
        extra: dict[str, Any] = {}
        for drv in DRIVERS.values():
            seen = await drv.observe_extra(kernel, state, scope)
            if seen is not None:
                extra[drv.name] = seen
        # what cluster mode adds (the overlay's view of the cluster cache and its VXLAN devices)
        for observer in self.observers:
            extra.update(await observer(state, scope, host))
        return Observed(
            extra=extra,
            changed_sysctls=frozenset(self.changes.sysctls),
            changed_addresses={k: (b, tuple(a)) for k, (b, a) in self.changes.addresses.items()},
            host=host,
            netns_alive=alive,
            netns_owned=owned,
            sysctls=sysctls,
            accept_ra=accept_ra,
            children=children,
            peers=peers,
            firewall=FirewallSeen(wanted=rules, applied=self._applied_rules, in_sync=in_sync),
        )

    def _peer_targets(self, state: DesiredState, scope: Scope) -> dict[str, tuple[str, str]]:
        """The endpoints whose namespace side this reconcile reads: (netns path, ifname) by endpoint id."""
        ids = state.endpoints if scope.peers is None else scope.peers
        out: dict[str, tuple[str, str]] = {}
        for ep_id in ids:
            ep = state.endpoints.get(ep_id)
            if ep is None or not scope.has_peer(ep_id):
                continue  # (a namespace that is gone gives no entry: observe_peers looks before it opens)
            out[ep_id] = (self.ns_path_of(ep), ep.ifname)
        return out

    async def _read_sysctl(self, key: str) -> str:
        try:
            return (await self.kernel.get_sysctl(key)).strip()
        except (NetdError, OSError):
            return ""

    async def _uplink_accept_ra(self, host: ObservedHost) -> dict[str, str]:
        """accept_ra of the links netd does not own (the host's uplinks): those with 1 need 2 under forwarding."""
        out: dict[str, str] = {}
        for link in host.by_name.values():
            if link.owner is not None or link.kind == "loopback":
                continue
            with contextlib.suppress(NetdError, OSError):
                out[link.ifname] = (await self.kernel.get_sysctl(f"net/ipv6/conf/{link.ifname}/accept_ra")).strip()
        return out

    def _gone_foreign(self, state: DesiredState) -> set[str]:
        """Endpoints in someone else's namespace that no longer exists (or is now another namespace)."""
        gone = set()
        for ep in state.endpoints.values():
            if ep.netns_path is None:
                continue
            inode = self.kernel.ns_identity(ep.netns_path)
            if inode is None or (ep.netns_inode is not None and inode != ep.netns_inode):
                gone.add(ep.id)
        return gone

    async def _fw_in_sync(self, rules: Ruleset) -> bool:
        try:
            return await self.firewall.in_sync(rules)
        except NetdError as e:
            log.warning("firewall_check_failed", error=e.message)
            return False

    # -- plan ----------------------------------------------------------------------------------------------------

    async def _plan(self, state: DesiredState, scope: Scope) -> list[Action]:
        rules = build_ruleset(state, ip_forward=self.settings.ip_forward, ports=self._port_maps)
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
