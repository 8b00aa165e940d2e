"""Is netd making progress?  The systemd watchdog is fed only while it is.

An event loop that runs is not enough: two tasks waiting for each other's lock, or a request stuck on a kernel
call, leave the loop alive and the daemon useless.  So the notify loop asks :class:`Health` first: a lock held
longer than a bound, or an API request running longer than it, stops WATCHDOG=1 (systemd restarts netd after
WatchdogSec) and STATUS= says what is stuck.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from netd.engine.locks import TimedLock
from netd.ops.notify import sd_notify


@dataclass
class InFlight:
    """API requests being served: id -> (start, "METHOD /path")."""

    requests: dict[int, tuple[float, str]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def middleware(self) -> Any:
        @web.middleware
        async def track(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            key = next(self._ids)
            self.requests[key] = (time.monotonic(), f"{request.method} {request.path}")
            try:
                return await handler(request)
            finally:
                del self.requests[key]

        return track


@dataclass
class Health:
    locks: dict[str, TimedLock]
    inflight: InFlight
    stuck_after: float  # seconds

    def stuck(self, now: float | None = None) -> list[str]:
        """What has not moved for longer than ``stuck_after`` (empty: healthy)."""
        now = time.monotonic() if now is None else now
        out = []
        for name, lock in self.locks.items():
            since = lock.held_since
            if since is not None and now - since > self.stuck_after:
                out.append(f"the {name} lock is held for {now - since:.0f} s")
        for start, what in list(self.inflight.requests.values()):
            if now - start > self.stuck_after:
                out.append(f"API request {what} is running for {now - start:.0f} s")
        return out


async def notify_loop(
    watchdog: float | None, interval: float, status_line: Callable[[], str], health: Health
) -> None:
    """WATCHDOG=1 every ``watchdog`` seconds while netd makes progress; STATUS= when it changed."""
    last = ""
    while True:
        stuck = health.stuck()
        line = ("STUCK (no watchdog keep-alive): " + "; ".join(stuck)) if stuck else status_line()
        parts = ["WATCHDOG=1"] if watchdog and not stuck else []
        if line != last:
            parts.append(f"STATUS={line}")
            last = line
        if parts:
            sd_notify("\n".join(parts))
        await asyncio.sleep(watchdog or interval)
