"""What a reconcile looks at: the owned kernel objects, the sysctls, the namespaces' side of the endpoints, the
firewall, and what the drivers and cluster mode observe themselves; also which foreign namespaces are gone.

A mixin of ``netd.engine.reconciler.Reconciler`` (it reads the kernel, never changes it), called under the
reconciler lock except ``_gone_foreign``, which the full pass also calls before it takes the lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from netd.core.actions import FirewallSeen, Observed, Scope
from netd.core.config import Settings
from netd.core.errors import NetdError
from netd.core.linkspec import ObservedHost
from netd.core.model import DesiredState, Endpoint
from netd.core.ruleset import Ruleset
from netd.drivers import DRIVERS
from netd.engine.hostchanges import HostChanges
from netd.engine.plan import IP6_FORWARD, localnet_keys, scope_links, scope_targets, wants_ip6_forward
from netd.firewall.base import FirewallBackend
from netd.kernel.facade import Kernel

log = structlog.get_logger()

# a driver's own observation (say the overlay's VXLAN devices and the cluster's remote endpoints): called with
# the state, the scope and the observed host links; returns entries for ``Observed.extra``
Observer = Callable[[DesiredState, Scope, ObservedHost], Awaitable[dict[str, Any]]]


class ReconcilerObserve:
    # set by Reconciler.__init__
    settings: Settings
    kernel: Kernel
    firewall: FirewallBackend
    changes: HostChanges
    observers: list[Observer]
    _applied_rules: Ruleset | None

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
