"""The netd daemon: settings, logging, start-up order, signals, API socket.

Start-up: settings -> instance lock -> state file -> firewall backend -> default bridge -> full reconcile
(the replay) -> API socket -> READY=1.  SIGTERM stops without tearing anything down: the data path stays up
while netd is stopped or upgraded.  SIGHUP re-reads the config and reconciles.
"""

from __future__ import annotations

from netd.ops.serving import LEAN  # noqa: F401  (first: before aiohttp is imported; see netd.ops.serving)

# isort: split

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from netd import __version__
from netd.api import build_app
from netd.core.config import Settings, load_settings
from netd.core.errors import NetdError
from netd.core.model import DesiredState
from netd.dns.hostsfile import HostsWriter
from netd.dns.nsresolver import NsResolvers
from netd.dns.resolvconf import ResolvConfWriter, read_host
from netd.dns.server import DnsServer
from netd.dns.upstream import Forwarder, choose_upstreams
from netd.engine.hostchanges import restore_sysctls_now
from netd.engine.reconciler import Reconciler
from netd.engine.service import Service
from netd.engine.state import StateStore
from netd.engine.triggers import Triggers
from netd.firewall.select import choose_backend, cleanup_other, purge_all
from netd.kernel import netns as nsops
from netd.kernel.facade import Kernel
from netd.ops import malloc
from netd.ops.logs import setup_logging
from netd.ops.metrics import ReconcileStats
from netd.ops.notify import sd_notify
from netd.ops.operations import Operations
from netd.ops.unixsock import start_private

log = structlog.get_logger()


class Daemon:
    def __init__(self, settings: Settings, config_path: Path | None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.store = StateStore(settings.state_file)
        self.kernel = Kernel(
            settings.netns_dir, settings.host_mount_namespace, owned_dir=settings.run_dir / "netns-owned"
        )
        self.stats = ReconcileStats()
        self.firewall, self.firewall_reason = choose_backend(settings.firewall.backend)
        # the reconciler reads the service's state and prunes through it; both lambdas resolve at call time
        self.reconciler = Reconciler(
            settings,
            self.kernel,
            self.firewall,
            lambda: self.service.state,
            lambda ids, why: self.service.prune_endpoints(ids, why),
            self.stats,
        )
        self.triggers = Triggers(self.reconciler, after_pass=malloc.trim)
        self.service = Service(
            settings, self.store, self.store.load(), applier=self.reconciler, kernel=self.kernel
        )
        self.ops = Operations(settings, config_path, self.service, self.reconciler, self.stats, self.firewall.name)
        host_resolv = read_host()
        self.dns = DnsServer(lambda: self.service.state, Forwarder(choose_upstreams(settings.dns, host_resolv)))
        self.dns.on_query = self.ops.metrics.dns_query
        # 127.0.0.11 inside the namespaces of macvlan/ipvlan endpoints; a namespace deleted under netd has its
        # sockets closed (they would keep it alive) and wakes the reconciler to forget its endpoints
        self.ns_dns = NsResolvers(
            self.dns, nsops.call_in_each, self.kernel.netns_path, nsops.ns_inode, on_vanished=self.triggers.poke
        )
        self.hosts = HostsWriter(settings.etc_netns_dir)  # --link entries
        self.resolv_conf = ResolvConfWriter(settings.etc_netns_dir, host_resolv, settings.default_bridge.dns)
        self.service.on_change = self._state_changed
        self.service.before_apply = self._files_early
        self.reconciler.index_of = self.service.kept_index  # the port maps catch up by the changed endpoints
        self.stopping = asyncio.Event()
        self._reloading = asyncio.Lock()
        self.runner: web.AppRunner | None = None
        self.docker_runner: web.AppRunner | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.multihost: Any = None  # cluster mode only: netd.multihost (aetcd/grpc are not even imported else)
        if settings.cluster is not None:
            from .multihost.api import register_metrics
            from .multihost.node import MultiHost

            self.multihost = MultiHost(self)
            register_metrics(self.multihost, self.ops.metrics.registry)

    async def _files_early(self, state: DesiredState, netns: frozenset[str]) -> None:
        """Beside the kernel apply of a change naming its namespaces: their resolv.conf files, in a thread (the
        loop does not touch the writer until this returns; ``_state_changed`` then finds them written)."""
        index = self.service.index_of(state)
        await asyncio.to_thread(self.resolv_conf.sync, state, netns, index)

    async def _state_changed(self, state: DesiredState, netns: frozenset[str] | None) -> None:
        """After each commit: DNS listeners for new networks (existing sockets kept), netns resolv.conf files
        (only those of ``netns`` when the change named them)."""
        index = self.service.index_of(state)  # the current state's: kept with it, not built
        await self.dns.sync(state)
        await self.ns_dns.sync(state, index)
        self.resolv_conf.sync(state, netns, index)
        self.hosts.sync(state, index.has_links)
        if self.multihost is not None:
            self.multihost.state_changed(state)

    def _state_file(self) -> str:
        """The snapshot when there is one; before the first compaction only the journal exists."""
        snap = self.settings.state_file
        journal = snap.with_name(snap.name + ".journal")
        if snap.exists() or not journal.exists():
            return str(snap) if snap.exists() else f"{snap} (not written yet: no change so far)"
        return f"{journal} (journal; {snap.name} is written at the first compaction)"

    def status(self) -> dict[str, Any]:
        st = self.service.state
        s = self.stats
        return {
            "version": __version__,
            "pid": os.getpid(),
            "state_file": self._state_file(),
            "networks": len(st.networks),
            "endpoints": len(st.endpoints),
            "netns": len(st.netns),
            "firewall": {"backend": self.firewall.name, "reason": self.firewall_reason},
            "reconcile": {
                "runs": s.runs,
                "last": s.last,
                "last_reason": s.last_reason,
                "last_ms": s.last_duration_ms,
                "last_changes": s.last_changes,
                "changes": s.changes,
                "errors": s.errors,
                "repairs": s.repairs,
                "firewall_repairs": s.firewall_repairs,
                "in_sync": not s.last_errors,
            },
            "drift": s.last_errors,
            **({"cluster": self.multihost.status()} if self.multihost is not None else {}),
            **self.ops.status_extra(),
        }

    async def start(self) -> None:
        s = self.settings
        await cleanup_other(self.firewall)  # a switch of backend: remove what netd owned in the old one
        await self.service.ensure_default_network()
        if self.multihost is not None:
            await self.multihost.start()  # etcd unreachable: a clear error, netd does not start
        errors = await self.reconciler.reconcile("start")
        if errors:
            log.warning("start_incomplete", errors=errors)
        malloc.trim()  # the start-up pass decoded every link: give its garbage back
        await self.service.notify_change()  # DNS listeners and resolv.conf files for the replayed state
        s.run_dir.mkdir(parents=True, exist_ok=True)
        sock = s.socket_path
        cluster_routes = None
        if self.multihost is not None:
            from .multihost.api import add_node_routes
            from .multihost.service_api import add_service_routes

            mh = self.multihost

            def cluster_routes(routes: web.RouteTableDef, json: Callable[..., web.Response]) -> None:
                add_node_routes(routes, mh, json)
                add_service_routes(routes, mh.service_ops, json)

        app = build_app(
            self.service,
            self.status,
            metrics=self.ops.metrics.render,
            ops=self.ops.api_ops(self.reload),
            cluster_routes=cluster_routes,
        )
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        # bound under umask 077, then socket_group and socket_mode: never open to others, even for a moment
        await start_private(web.UnixSite(self.runner, str(sock)), sock, s.socket_mode, s.socket_group)
        if s.docker_api.path is not None:
            from netd.dockerapi.routes import serve_docker_api  # only a daemon that serves it loads it

            path = s.docker_api.path
            self.docker_runner = await serve_docker_api(self.service, path, s.socket_mode, s.socket_group)
        self.tasks = [
            asyncio.create_task(self.triggers.run_timer()),
            asyncio.create_task(self.triggers.run_firewall_check()),
            asyncio.create_task(self.triggers.run_events()),
            asyncio.create_task(self.ns_dns.watch()),
        ]
        if self.multihost is not None:
            self.tasks += self.multihost.run()
        st = self.service.state
        log.info(
            "netd_ready",
            socket=str(sock),
            networks=len(st.networks),
            endpoints=len(st.endpoints),
            firewall=self.firewall.name,
        )
        self.tasks += await self.ops.start()  # metrics listener, READY=1, WATCHDOG=1/STATUS= under systemd

    async def reload(self) -> dict[str, Any]:
        """Re-read the config and apply it (SIGHUP and ``POST /v1/reload``, one at a time); the outcome says what
        applied, what is pending (needs endpoints gone, also shown in ``status``) and what failed."""
        async with self._reloading:
            sd_notify("RELOADING=1")
            try:
                return await self._reload()
            finally:
                sd_notify("READY=1")

    async def _reload(self) -> dict[str, Any]:
        try:
            new = load_settings(self.config_path)
        except NetdError as e:
            log.error("reload_failed", error=e.message)
            return {"reloaded": False, "errors": [e.message], "pending": self.service.pending}
        setup_logging(new.log_level, new.log_format)
        errors: list[str] = []
        # Paths and the firewall backend are fixed for the life of the process; the rest applies now.
        self.settings.default_bridge = new.default_bridge
        self.settings.ip_forward = new.ip_forward
        self.settings.reconcile_interval = new.reconcile_interval
        self.settings.default_address_pools = new.default_address_pools
        try:
            await self.service.ensure_default_network()
        except NetdError as e:
            log.error("reload_default_bridge_failed", error=e.message)
            errors.append(e.message)
        errors += [f"{k}: {v}" for k, v in (await self.reconciler.reconcile("reload")).items()]
        # upstream resolvers (config dns, else the host's resolv.conf read again); the listeners stay open
        self.settings.dns = new.dns
        host_resolv = read_host()
        self.dns.forwarder.upstreams = choose_upstreams(new.dns, host_resolv)
        self.resolv_conf.host = host_resolv
        self.resolv_conf.default_dns = new.default_bridge.dns
        await self.service.notify_change()
        log.info("config_reloaded", pending=len(self.service.pending), errors=len(errors))
        return {"reloaded": True, "errors": errors, "pending": list(self.service.pending)}

    async def stop(self) -> None:
        sd_notify("STOPPING=1")
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for runner in (self.runner, self.docker_runner):
            if runner is not None:
                await runner.cleanup()
        await self.ops.stop()
        await self.ns_dns.close()
        await self.dns.close()
        self.resolv_conf.close()  # the queued resolv.conf removals of a batch finish before the process ends
        if self.multihost is not None:
            await self.multihost.stop()
        await self.kernel.close()
        log.info("netd_stopped", note="network left in place")


def _lock(run_dir: Path) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / "netd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise NetdError(f"another netd is running with run_dir {run_dir}; stop it first") from None
    return fd


async def _sighup(daemon: Daemon) -> None:
    await daemon.reload()


async def run(settings: Settings, config_path: Path | None) -> int:
    lock_fd = _lock(settings.run_dir)
    malloc.tune()
    daemon = Daemon(settings, config_path)
    loop = asyncio.get_running_loop()
    reloads: list[asyncio.Task[None]] = []
    loop.add_signal_handler(signal.SIGTERM, daemon.stopping.set)
    loop.add_signal_handler(signal.SIGINT, daemon.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reloads.append(asyncio.create_task(_sighup(daemon))))
    try:
        await daemon.start()
        await daemon.stopping.wait()
    finally:
        await daemon.stop()
        os.close(lock_fd)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="netd", description="netd: Docker-style host networking, reconciled")
    parser.add_argument("--config", type=Path, default=None, help="TOML config file (default /etc/netd/netd.toml)")
    parser.add_argument("--version", action="version", version=f"netd {__version__}")
    parser.add_argument(
        "--purge-firewall",
        action="store_true",
        help="remove netd's firewall rules, chains and jumps from every backend (nftables, iptables nft and "
        "legacy) in this network namespace and put back the host sysctls netd changed (IPv6 forwarding, "
        "accept_ra), then exit; run it after stopping netd to uninstall",
    )
    args = parser.parse_args(argv)
    if args.purge_firewall:
        setup_logging("info", "auto")
        removed = asyncio.run(purge_all())
        print("netd: removed netd's firewall objects from: " + (", ".join(removed) or "nothing (none found)"))
        try:  # the host sysctls netd changed (IPv6 forwarding, accept_ra) are recorded under its state_dir
            state_dir = load_settings(args.config).state_dir
        except NetdError as e:
            print(f"netd: host sysctls not restored: {e.message}", file=sys.stderr)
            sys.exit(2)
        restored = restore_sysctls_now(state_dir)
        print("netd: restored host sysctls: " + (", ".join(restored) or "nothing (netd changed none)"))
        return
    try:
        settings = load_settings(args.config)
    except NetdError as e:
        print(f"netd: {e.message}", file=sys.stderr)
        sys.exit(2)
    setup_logging(settings.log_level, settings.log_format)
    try:
        sys.exit(asyncio.run(run(settings, args.config)))
    except NetdError as e:
        log.error("netd_failed", error=e.message, code=e.code)
        print(f"netd: {e.message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
