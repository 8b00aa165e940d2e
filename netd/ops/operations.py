"""What netd gives its operators: readiness and STATUS for systemd, /metrics, status extras, plan/check/doctor.

The daemon owns one :class:`Operations`; nothing here polls: metrics are read at scrape time, and the notify
loop only runs under systemd (NOTIFY_SOCKET set), waking every WatchdogSec/2 (or 10 s for STATUS alone).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from netd.core.config import Settings
from netd.core.facts import Facts
from netd.engine.reconciler import Reconciler
from netd.engine.service import Service
from netd.kernel import hostfacts
from netd.kernel.mountns import usable
from netd.ops.api import Ops
from netd.ops.doctor import diagnose, report
from netd.ops.metrics import Metrics, ReconcileStats, Source, serve
from netd.ops.notify import sd_notify, watchdog_interval
from netd.ops.progress import Health, InFlight, notify_loop

log = structlog.get_logger()

STATUS_ONLY_INTERVAL = 10.0


class Operations:
    def __init__(
        self,
        settings: Settings,
        config_path: Path | None,
        service: Service,
        reconciler: Reconciler,
        stats: ReconcileStats,
        firewall_name: str,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.service = service
        self.reconciler = reconciler
        self.stats = stats
        self.started = time.time()
        self.ready = False
        self.metrics_error = ""
        self.metrics = Metrics(
            Source(
                state=lambda: service.state,
                stats=stats,
                firewall_name=firewall_name,
                applied_rules=lambda: reconciler.applied_rules,
                ready=lambda: self.ready,
                started=self.started,
            )
        )
        self.inflight = InFlight()
        self.health = Health(
            {"reconciler": reconciler.lock, "service": service.lock}, self.inflight, settings.watchdog_stuck_after
        )
        self._runner: web.AppRunner | None = None
        self._mount_ns = usable(settings.host_mount_namespace)
        if not self._mount_ns[0] and not os.environ.get("INVOCATION_ID"):  # not a systemd service: no private ns
            self._mount_ns = (False, "netns are mounted in netd's own mount namespace (not run by systemd)")

    # -- API -----------------------------------------------------------------------------------------------

    def api_ops(self, reload: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> Ops:
        return Ops(
            dry_run=self.reconciler.dry_run,
            doctor=self.doctor,
            observe=self.metrics.observe_api,
            inflight=self.inflight,
            reload=reload,
        )

    def status_extra(self) -> dict[str, Any]:
        s = self.settings
        return {
            "uptime_s": round(time.time() - self.started, 1),
            "ready": self.ready,
            "config": str(self.config_path) if self.config_path else "(defaults; /etc/netd/netd.toml absent)",
            "metrics": s.metrics.listen or "off",
            "netns_mounts": self._mount_ns[1],
            "degraded": self.degraded(),
        }

    def degraded(self) -> list[str]:
        out = []
        st = self.stats
        if not self.ready:
            out.append("starting: the first reconcile has not finished")
        if st.last_errors:
            out.append(f"{len(st.last_errors)} object(s) failed in the last reconcile (netd-ctl check)")
        age = time.time() - st.last_success if st.last_success else None
        if self.ready and (age is None or age > 3 * self.settings.reconcile_interval):
            out.append("no successful full reconcile recently (netd-ctl doctor)")
        if self.metrics_error:
            out.append(self.metrics_error)
        out += self.health.stuck()
        out += [f"config not applied: {p}" for p in self.service.pending]
        if not self._mount_ns[0] and "cannot open" in self._mount_ns[1]:
            out.append(self._mount_ns[1])
        return out

    def status_line(self) -> str:
        st = self.service.state
        r = self.stats
        sync = "in sync" if not r.last_errors else f"{len(r.last_errors)} failing"
        return (
            f"{len(st.networks)} networks, {len(st.endpoints)} endpoints, {len(st.netns)} netns; "
            f"last reconcile {r.last_duration_ms:.0f} ms, {r.last_changes} changes, {sync}; repairs {r.repairs}"
        )

    async def doctor(self) -> dict[str, Any]:
        stats = self.stats
        facts = Facts(
            reconcile_interval=self.settings.reconcile_interval,
            reconcile_errors=dict(stats.last_errors),
            last_success_age=time.time() - stats.last_success if stats.last_success else None,
            mount_ns=self._mount_ns,
        )
        await hostfacts.gather(facts)
        return report(diagnose(facts, self.service.state, self.settings.ip_forward))

    # -- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> list[asyncio.Task[None]]:
        """After the first reconcile: metrics listener, READY=1, and the notify loop under systemd."""
        cfg = self.settings.metrics
        try:
            self._runner = await serve(self.metrics.render, cfg, self.settings.socket_group)
        except OSError as exc:
            why = exc.strerror or str(exc)
            where = f"token_file {exc.filename}" if exc.filename and cfg.token_file else f"listen {cfg.listen}"
            self.metrics_error = f"metrics: not served ({where}: {why}); fix [metrics] and restart netd"
            log.error("metrics_listen_failed", address=cfg.listen, error=why)
        except ValueError as exc:
            self.metrics_error = f"metrics: not served (token_file {cfg.token_file}: {exc}); put a token in it"
            log.error("metrics_listen_failed", address=cfg.listen, error=str(exc))
        self.ready = True
        sd_notify(f"READY=1\nSTATUS={self.status_line()}")
        if not os.environ.get("NOTIFY_SOCKET"):
            return []
        # WATCHDOG=1 only while the reconciler and the API make progress (netd.ops.progress), STATUS= on change
        loop = notify_loop(watchdog_interval(), STATUS_ONLY_INTERVAL, self.status_line, self.health)
        return [asyncio.create_task(loop)]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
