"""What starts a reconcile besides the API: the timer, netlink events about netd's links (debounced by one wake
event), and the firewall check between reconciles."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from netd.core.model import DesiredState
from netd.drivers import get_driver
from netd.engine.reconciler import Reconciler

log = structlog.get_logger()

DRIFT_EVENTS = ("link_deleted", "link_down", "addr_deleted", "link_renamed", "resync")


class Triggers:
    def __init__(self, reconciler: Reconciler, after_pass: Callable[[], object] = lambda: None) -> None:
        self.reconciler = reconciler
        self.after_pass = after_pass  # the daemon gives the full pass's garbage back (malloc.trim)
        self.settings = reconciler.settings
        self._wake = asyncio.Event()
        self._wanted: frozenset[str] = frozenset()
        self._wanted_for: DesiredState | None = None
        reconciler.wake = self.poke

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
                await self.reconciler.reconcile(reason)
            except Exception:
                log.exception("reconcile_crashed", reason=reason)
            self.after_pass()  # a full pass decodes every link and netns: give its garbage back

    async def run_firewall_check(self) -> None:
        while True:
            await asyncio.sleep(self.settings.firewall_check_interval)
            await self.reconciler.repair_firewall()

    async def run_events(self) -> None:
        """Netlink notifications about netd's links wake the reconciler (debounced by the wake event)."""
        try:
            async for why in self.reconciler.kernel.events():
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
        state = self.reconciler.get_state()
        if self._wanted_for is not state:  # recomputed once per state version, not per event
            names = {ep.host_ifname for ep in state.endpoints.values() if ep.host_ifname}
            for net in state.networks.values():
                names |= get_driver(net).link_names(net)
            self._wanted = frozenset(names)
            self._wanted_for = state
        return self._wanted
