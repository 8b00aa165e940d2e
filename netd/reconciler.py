"""The single writer: observe the owned kernel objects, plan the difference, apply it.

Triggers: start-up (the replay after a reboot is a reconcile from an empty kernel), every API change (scoped
to the objects it touched), netlink events about owned links, a firewall check every second, and a timer.
Each action's failure is recorded against the object it belongs to and the rest still goes ahead.

Lock order: the service lock, then the reconciler lock, never the reverse.  The service holds its lock while it
asks the reconciler to apply a change; so nothing here calls back into the service (``prune``) while holding
``self.lock``: a full reconcile prunes the endpoints whose foreign namespace is gone first, without the lock,
and only then takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import structlog

from . import malloc
from .actions import (
    Action,
    DeleteChildren,
    DeleteLinks,
    DriverAction,
    EnsureBridge,
    EnsureChild,
    EnsureNetns,
    EnsureParent,
    EnsureShim,
    EnsureVeth,
    Observed,
    RemoveNetns,
    Scope,
    SetSysctl,
    describe,
)
from .config import Settings
from .drivers import get_driver
from .errors import NetdError
from .firewall.base import FirewallBackend
from .firewall.rules import Ruleset, build_ruleset, udp_changes
from .hostchanges import HostChanges, put_back, record_adopted
from .kernel import conntrack
from .kernel.netlink import Kernel
from .linkspec import NsProbe, ObservedHost
from .model import DesiredState, Endpoint, IPNetwork
from .plan import IP6_FORWARD, plan, scope_links, scope_targets, wants_ip6_forward
from .ports import published
from .progress import TimedLock

log = structlog.get_logger()

DRIFT_EVENTS = ("link_deleted", "link_down", "addr_deleted", "link_renamed", "resync")


DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REPAIR_KIND = {
    "EnsureNetns": "netns",
    "EnsureBridge": "bridge",
    "EnsureVeth": "veth",
    "DeleteLinks": "stale_link",
    "RemoveNetns": "stale_netns",
    "SetSysctl": "sysctl",
}
DRIFT_REASONS = ("timer", "event", "firewall")  # reconcile reasons that repair drift (no API call asked)


@dataclass
class Stats:
    runs: int = 0
    last: str = ""
    last_reason: str = ""
    last_duration_ms: float = 0.0
    last_changes: int = 0
    changes: int = 0
    errors: int = 0
    repairs: int = 0  # changes made by reconciles that no API call asked for: drift repaired
    firewall_repairs: int = 0
    last_errors: dict[str, str] = field(default_factory=dict)
    # for /metrics (netd.metrics reads these at scrape time)
    ok: int = 0  # runs without errors
    last_success: float = 0.0  # unix time of the last full reconcile without errors
    duration_sum: float = 0.0  # seconds
    duration_buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))  # cumulative
    repairs_by_kind: dict[str, int] = field(default_factory=dict)

    def observe(self, seconds: float, ok: bool, full: bool) -> None:
        self.duration_sum += seconds
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self.duration_buckets[i] += 1
        if ok:
            self.ok += 1
            if full:
                self.last_success = time.time()


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        kernel: Kernel,
        firewall: FirewallBackend,
        get_state: Callable[[], DesiredState],
        prune: Callable[[set[str], str], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.kernel = kernel
        self.firewall = firewall
        self.get_state = get_state
        self.prune = prune
        self.lock = TimedLock()  # held_since feeds the watchdog's progress check (netd.progress)
        self.stats = Stats()
        self.owned_dir = settings.run_dir / "netns-owned"
        self.changes = HostChanges.load(settings.state_dir)  # what to put back on things that are not netd's
        self._applied_rules: Ruleset | None = None
        self._wake = asyncio.Event()
        self._wanted: frozenset[str] = frozenset()
        self._wanted_for: DesiredState | None = None

    # -- small read-only helpers the service uses -------------------------------------------------------------

    @property
    def applied_rules(self) -> Ruleset | None:
        return self._applied_rules

    def netns_path(self, name: str) -> str:
        return str(self.settings.netns_dir / name)

    def ns_path_of(self, ep: Endpoint) -> str:
        return self.netns_path(ep.netns) if ep.netns is not None else (ep.netns_path or "")

    def ns_inode(self, path: str) -> int | None:
        """The namespace's inode if ``path`` is a live network namespace, else None."""
        return self.kernel.ns_identity(path)

    def ns_probe(self, path: str) -> NsProbe:
        return self.kernel.ns_probe(path)

    async def ns_has_link(self, path: str, ifname: str) -> bool:
        return await self.kernel.ns_has_link(path, ifname)

    def netns_foreign(self, name: str) -> str | None:
        """The path of a live namespace of that name netd did not make (no marker), else None."""
        path = self.netns_path(name)
        if (self.owned_dir / name).exists() or not self.kernel.ns_alive(path):
            return None
        return path

    async def host_prefixes(self) -> list[IPNetwork]:
        return await self.kernel.host_prefixes()

    async def observe_links(self, names: Collection[str] | None) -> ObservedHost:
        """The named links of the daemon's namespace (None: every link)."""
        return await self.kernel.observe(names)

    def _target_path(self, target: str) -> str:
        kind, _, value = target.partition(":")
        return self.netns_path(value) if kind == "netns" else value

    # -- observe -----------------------------------------------------------------------------------------------

    def _owned_netns(self) -> set[str]:
        try:
            return set(os.listdir(self.owned_dir))
        except FileNotFoundError:
            return set()

    def _mark_owned(self, name: str, owned: bool) -> None:
        marker = self.owned_dir / name
        if owned:
            self.owned_dir.mkdir(parents=True, exist_ok=True)
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    async def _observe(self, state: DesiredState, scope: Scope) -> Observed:
        host: ObservedHost = await self.kernel.observe(
            None if scope.is_full else scope.links | scope_links(state, scope)
        )
        if scope.netns is None:
            owned = self._owned_netns()
        else:  # a scoped reconcile looks at its own namespaces only: no directory listing per connect
            owned = {n for n in scope.netns if (self.owned_dir / n).exists()}
        names = set(state.netns) | owned
        alive = {n for n in names if scope.has_netns(n) and self.kernel.ns_alive(self.netns_path(n))}
        sysctls: dict[str, str] = {}
        accept_ra: dict[str, str] = {}
        # forwarding is read on every reconcile (a file read): the first IPv6 network turns it on at once
        if self.settings.ip_forward:
            sysctls["net.ipv4.ip_forward"] = (await self.kernel.get_sysctl("net.ipv4.ip_forward")).strip()
        if wants_ip6_forward(state, self.settings.ip6_forward):
            sysctls[IP6_FORWARD] = (await self.kernel.get_sysctl(IP6_FORWARD)).strip()
            if sysctls[IP6_FORWARD] != "1":  # rare: look at every link, not only the scope's
                accept_ra = await self._uplink_accept_ra(await self.kernel.observe())
        targets = scope_targets(state, scope) | scope.targets
        children = await self.kernel.observe_children({self._target_path(t) for t in targets}) if targets else {}
        return Observed(
            host=host,
            netns_alive=alive,
            netns_owned=owned,
            sysctls=sysctls,
            accept_ra=accept_ra,
            children=children,
        )

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
            inode = self.ns_inode(ep.netns_path)
            if inode is None or (ep.netns_inode is not None and inode != ep.netns_inode):
                gone.add(ep.id)
        return gone

    # -- apply -------------------------------------------------------------------------------------------------

    async def apply(self, scope: Scope, reason: str) -> dict[str, str]:
        """Reconcile the objects in ``scope``; returns errors by owner id (empty: all applied)."""
        async with self.lock:
            return await self._reconcile(scope, reason)

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

    async def dry_run(self) -> list[dict[str, str]]:
        """What a full reconcile would do now, without doing it (``netd-ctl plan`` / ``check``)."""
        actions: list[Action] = []
        async with self.lock:
            await self._reconcile(Scope.everything(), "dry_run", dry=actions)
            state = self.get_state()
            fw_ok = await self._fw_in_sync(build_ruleset(state, ip_forward=self.settings.ip_forward))
            gone = self._gone_foreign(state)
        out = [
            {"action": type(a).__name__, "owner": a.owner, "description": describe(a)}
            for a in actions
            if a.owner not in gone
        ]
        for ep in sorted(gone):
            desc = f"forget endpoint {ep} (its namespace is gone)"
            out.append({"action": "ForgetEndpoint", "owner": ep, "description": desc})
        if not fw_ok:
            desc = f"load netd's {self.firewall.name} rules (missing or changed in the kernel)"
            out.append({"action": "ApplyFirewall", "owner": "firewall", "description": desc})
        return out

    async def _reconcile(self, scope: Scope, reason: str, dry: list[Action] | None = None) -> dict[str, str]:
        t0 = time.perf_counter()
        state = self.get_state()
        gone = self._gone_foreign(state) if scope.is_full and dry is None else set()
        if gone:  # went after reconcile() pruned: the next pass prunes it (never from under this lock)
            self.poke()
        observed = await self._observe(state, scope)
        actions = plan(
            state,
            observed,
            ns_path=self.ns_path_of,
            ip_forward=self.settings.ip_forward,
            ip6_forward=wants_ip6_forward(state, self.settings.ip6_forward),
            scope=scope,
        )
        if dry is not None:  # a dry run: report the plan, change nothing
            dry.extend(actions)
            return {}
        actions = [a for a in actions if a.owner not in gone]
        errors: dict[str, str] = {}
        applied = 0
        rules = build_ruleset(state, ip_forward=self.settings.ip_forward)
        rules_pending = rules != self._applied_rules or (scope.is_full and not await self._fw_in_sync(rules))
        # Links first (bridges, namespaces), then the firewall, then endpoints, then deletions.
        first: list[Action] = [
            a for a in actions if isinstance(a, EnsureNetns | EnsureBridge | SetSysctl | EnsureParent | EnsureShim)
        ]
        rest = [a for a in actions if a not in first]
        for action in first:
            applied += await self._run(action, errors)
        if rules_pending:
            try:
                await self.firewall.apply(rules)
                previous, self._applied_rules = self._applied_rules, rules
                applied += 1
                log.info("firewall_applied", backend=self.firewall.name, reason=reason)
                await self._after_published_change(previous, rules)
            except NetdError as e:
                errors["firewall"] = e.message
                for net in state.networks.values():
                    if scope.has_network(net.id):
                        errors[net.id] = e.message
        for action in rest:
            applied += await self._run(action, errors)
        await self._ensure_route_localnet(state, scope)
        ip6 = wants_ip6_forward(state, self.settings.ip6_forward)
        await put_back(self.changes, self.kernel, ip6, {n.id for n in state.networks.values()}, scope.has_network)
        if reason in DRIFT_REASONS:
            kinds = [REPAIR_KIND.get(type(a).__name__, "other") for a in actions if a.owner not in errors]
            if rules_pending and "firewall" not in errors:
                kinds.append("firewall")
            for kind in kinds:
                self.stats.repairs_by_kind[kind] = self.stats.repairs_by_kind.get(kind, 0) + 1
        self._record(reason, applied, errors, (time.perf_counter() - t0) * 1000)
        self.stats.observe(time.perf_counter() - t0, not errors, scope.is_full)
        return errors

    async def _run(self, action: Action, errors: dict[str, str]) -> int:
        try:
            await self._execute(action)
        except (NetdError, OSError) as e:
            msg = e.message if isinstance(e, NetdError) else f"{describe(action)}: {e}"
            errors[action.owner] = msg
            log.error("action_failed", action=describe(action), error=msg)
            return 0
        log.info("action_applied", action=describe(action))
        return 1

    async def _execute(self, action: Action) -> None:
        match action:
            case EnsureNetns(name=name):
                # the marker first: a kill between the two leaves a marker without a mount, which the next
                # reconcile finishes (desired) or removes (not desired); never a mount netd does not know
                self._mark_owned(name, True)
                await self.kernel.ensure_netns(name)
            case RemoveNetns(name=name):
                await self.kernel.remove_netns(name)
                self._mark_owned(name, False)
            case EnsureBridge(spec=spec):
                if spec.adopt:
                    await record_adopted(self.changes, self.kernel, spec)
                await self.kernel.ensure_bridge(spec)
            case EnsureVeth(spec=spec, seen_missing=seen_missing):
                await self.kernel.ensure_veth(spec, seen_missing=seen_missing)
            case DeleteLinks(ifnames=names):
                await self.kernel.delete_links(names)
            case SetSysctl(key=key, value=value):
                if key == IP6_FORWARD or key.endswith("/accept_ra"):  # host-wide: recorded first, put back later
                    self.changes.will_set(key, (await self.kernel.get_sysctl(key)).strip(), value)
                await self.kernel.set_sysctl(key, value)
            case EnsureParent(spec=spec):
                await self.kernel.ensure_parent(spec)
            case EnsureShim(spec=spec):
                await self.kernel.ensure_shim(spec)
            case EnsureChild(spec=spec):
                await self.kernel.ensure_child(spec)
            case DeleteChildren(children=children):
                await self.kernel.delete_children(children)
            case DriverAction():
                await action.apply(self.kernel)

    async def _after_published_change(self, previous: Ruleset | None, rules: Ruleset) -> None:
        """Forget the UDP conntrack entries of published ports that appeared, went or changed (not at start-up:
        the previous ruleset is unknown then, and live flows through unchanged ports must not be cut)."""
        if previous is None:
            return
        changed = udp_changes(previous, rules)
        if not changed:
            return
        try:
            await conntrack.flush_udp(conntrack.UdpTarget(v, ip, port) for v, ip, port in changed)
        except NetdError as e:  # the ports work; only old UDP flows may stay stuck: say so, do not fail
            log.warning("conntrack_flush_failed", error=e.message)

    async def _ensure_route_localnet(self, state: DesiredState, scope: Scope) -> None:
        """127.0.0.1:<published port> from the host needs route_localnet=1 on the bridge (as Docker sets it)."""
        touched = {
            n.id
            for n in state.networks.values()
            if get_driver(n).features(n).published_ports and scope.has_network(n.id)
        }
        if scope.endpoints is None:
            touched |= {ep.network for ep in state.endpoints.values() if ep.ports}
        else:  # a scoped change: look at its own endpoints only
            touched |= {ep.network for i in scope.endpoints if (ep := state.endpoints.get(i)) and ep.ports}
        if not touched:
            return
        for net_id in published(state, touched):
            net = state.network_by_id(net_id)
            if net is None or net.pool(4) is None:
                continue
            key = f"net/ipv4/conf/{net.bridge}/route_localnet"
            try:
                if (await self.kernel.get_sysctl(key)).strip() != "1":
                    await self.kernel.set_sysctl(key, "1")
                    log.info("route_localnet_enabled", bridge=net.bridge)
            except (NetdError, OSError) as e:  # the bridge is missing: its EnsureBridge error says why
                log.warning("route_localnet_failed", bridge=net.bridge, error=str(e))

    async def _fw_in_sync(self, rules: Ruleset) -> bool:
        try:
            return await self.firewall.in_sync(rules)
        except NetdError as e:
            log.warning("firewall_check_failed", error=e.message)
            return False

    def _record(self, reason: str, applied: int, errors: dict[str, str], ms: float) -> None:
        s = self.stats
        s.runs += 1
        s.last = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        s.last_reason = reason
        s.last_duration_ms = round(ms, 2)
        s.last_changes = applied
        s.changes += applied
        s.errors += len(errors)
        s.last_errors = errors
        if reason in ("timer", "event", "firewall") and applied:
            s.repairs += applied
        level = log.info if applied or errors else log.debug
        level("reconcile_done", reason=reason, changes=applied, errors=len(errors), ms=round(ms, 1))

    # -- background triggers -----------------------------------------------------------------------------------

    def poke(self) -> None:
        self._wake.set()

    async def run_timer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.reconcile_interval)
                reason = "event"
            except TimeoutError:
                reason = "timer"
            self._wake.clear()
            try:
                await self.reconcile(reason)
            except Exception:
                log.exception("reconcile_crashed", reason=reason)
            malloc.trim()  # a full pass decodes every link and netns: give its garbage back

    async def run_firewall_check(self) -> None:
        """Notice a flushed ruleset (nft flush ruleset, a firewall reload) and put netd's rules back."""
        while True:
            await asyncio.sleep(self.settings.firewall_check_interval)
            if self._applied_rules is None or self.lock.locked():
                continue
            rules = self._applied_rules
            if await self._fw_in_sync(rules):
                continue
            async with self.lock:
                try:
                    await self.firewall.apply(rules)
                    self.stats.firewall_repairs += 1
                    self.stats.repairs += 1
                    self.stats.repairs_by_kind["firewall"] = self.stats.repairs_by_kind.get("firewall", 0) + 1
                    log.warning("firewall_repaired", backend=self.firewall.name)
                except NetdError as e:
                    log.error("firewall_repair_failed", error=e.message)

    async def run_events(self) -> None:
        """Netlink notifications about netd's links wake the reconciler (debounced by the wake event)."""
        try:
            async for why in self.kernel.events():
                # netd's own creations also change masters: only losses are worth a full reconcile now;
                # anything subtler is found by the timer.
                if self._event_matters(why):
                    log.debug("kernel_event", what=why)
                    self.poke()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("events_stopped")

    def _event_matters(self, why: str) -> bool:
        """A loss of a link the desired state still wants is drift.  The links netd removes itself (disconnect,
        network rm, netns rm) and foreign links are not: a full reconcile per disconnect cost more than the
        disconnect itself."""
        if why == "resync":
            return True
        if not why.startswith(DRIFT_EVENTS):
            return False
        ifname = why.split(":")[1] if why.count(":") else ""
        return ifname in self._wanted_links()

    def _wanted_links(self) -> frozenset[str]:
        state = self.get_state()
        if self._wanted_for is not state:  # recomputed once per state version, not per event
            names = {ep.host_ifname for ep in state.endpoints.values() if ep.host_ifname}
            for net in state.networks.values():
                names |= get_driver(net).link_names(net)
            self._wanted = frozenset(names)
            self._wanted_for = state
        return self._wanted
