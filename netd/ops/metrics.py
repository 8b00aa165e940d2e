"""Prometheus metrics, collected at scrape time (nothing is polled between scrapes).

Served on ``[metrics] listen`` (default 127.0.0.1:9465) and on the API socket at ``/metrics``.  Everything is
read when Prometheus asks: the desired state (networks, endpoints, IPAM), the reconciler's counters, and the
interface counters of netd's bridges and veths from one RTM_GETSTATS netlink dump.  Only the API and DNS
counters are updated as events happen.
"""

from __future__ import annotations

import hmac
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

import structlog
from aiohttp import web

# submodules, not the package: its __init__ imports the exposition servers (wsgiref, http.server, gzip) and the
# process/platform/gc collectors netd does not use; the text format is imported at the first scrape
from prometheus_client.metrics import Counter, Histogram, disable_created_metrics
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from netd import __version__
from netd.core.config import Metrics as MetricsConfig
from netd.core.model import DesiredState, Network
from netd.core.ruleset import Ruleset
from netd.engine.reconciler import RunReport
from netd.kernel.stats import ifindex, link_counters
from netd.ops.unixsock import start_private

log = structlog.get_logger()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DRIFT_REASONS = ("timer", "event", "firewall")  # reconcile reasons that repair drift (no API call asked)
# drift repairs by kind (``netd_drift_repairs``); None: part of another change, not counted
REPAIR_KIND: dict[str, str | None] = {
    "EnsureNetns": "netns",
    "MarkNetns": None,
    "EnsureBridge": "bridge",
    "EnsureVeth": "veth",
    "DeleteLinks": "stale_link",
    "RemoveNetns": "stale_netns",
    "SetSysctl": "sysctl",
    "ApplyFirewall": "firewall",
    "FlushConntrack": None,
}


@dataclass
class ReconcileStats:
    """The reconciler's counters (its ``Recorder``), read by status, doctor and /metrics."""

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
    ok: int = 0  # runs without errors
    last_success: float = 0.0  # unix time of the last full reconcile without errors
    duration_sum: float = 0.0  # seconds
    duration_buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))  # cumulative
    repairs_by_kind: dict[str, int] = field(default_factory=dict)

    def reconciled(self, run: RunReport) -> None:
        changes = len(run.applied)
        self.runs += 1
        self.last = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.last_reason = run.reason
        self.last_duration_ms = round(run.seconds * 1000, 2)
        self.last_changes = changes
        self.changes += changes
        self.errors += len(run.errors)
        self.last_errors = run.errors
        if run.reason in DRIFT_REASONS:
            self.repairs += changes
            for name in run.applied:
                kind = REPAIR_KIND.get(name, "other")
                if kind is not None:
                    self.repairs_by_kind[kind] = self.repairs_by_kind.get(kind, 0) + 1
        self.duration_sum += run.seconds
        for i, bound in enumerate(DURATION_BUCKETS):
            if run.seconds <= bound:
                self.duration_buckets[i] += 1
        if not run.errors:
            self.ok += 1
            if run.full:
                self.last_success = time.time()

    def firewall_repaired(self) -> None:
        self.firewall_repairs += 1
        self.repairs += 1
        self.repairs_by_kind["firewall"] = self.repairs_by_kind.get("firewall", 0) + 1


@dataclass
class Source:
    """What the collector reads from the daemon, at scrape time."""

    state: Callable[[], DesiredState]
    stats: ReconcileStats
    firewall_name: str
    applied_rules: Callable[[], Ruleset | None]
    ready: Callable[[], bool]
    started: float = field(default_factory=time.time)  # unix time


def rule_count(rules: Ruleset | None) -> int:
    if rules is None:
        return 0
    return sum(len(ch.rules) for table in (rules.ip, rules.bridge) for ch in table.chains)


def address_usage(net: Network, state: DesiredState) -> list[tuple[str, int, int]]:
    """(subnet, addresses in use, usable size) per IPAM pool: gateway, aux-addresses and endpoints count."""
    out = []
    eps = state.endpoints_of(net.id)
    for cfg in net.ipam:
        taken = {a for a in cfg.aux_addresses.values() if a in cfg.subnet}
        if cfg.gateway is not None:
            taken.add(cfg.gateway)
        for ep in eps:
            for iface in (ep.ipv4, ep.ipv6):
                if iface is not None and iface.ip in cfg.subnet:
                    taken.add(ip_address(iface.ip))
        pool = cfg.ip_range or cfg.subnet
        size = pool.num_addresses
        if cfg.subnet.version == 4 and cfg.subnet.prefixlen < 31:
            size -= int(cfg.subnet.network_address in pool) + int(cfg.subnet.broadcast_address in pool)
        out.append((str(cfg.subnet), len(taken), size))
    return out


class NetdCollector(Collector):
    def __init__(self, source: Source) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        src = self.source
        state, stats = src.state(), src.stats
        info = GaugeMetricFamily(
            "netd_build_info", "netd version (value is always 1)", labels=["version", "python"]
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        yield GaugeMetricFamily("netd_start_time_seconds", "When netd started (unix time)", value=src.started)
        yield GaugeMetricFamily(
            "netd_ready", "1 once the first reconcile after start has finished", value=src.ready()
        )
        yield from self._networks(state)
        yield from self._reconcile(stats)
        fw = GaugeMetricFamily(
            "netd_firewall_info", "Firewall backend in use (value is always 1)", labels=["backend"]
        )
        fw.add_metric([src.firewall_name], 1)
        yield fw
        yield GaugeMetricFamily(
            "netd_firewall_rules",
            "Rules netd last applied to the packet filter",
            value=rule_count(src.applied_rules()),
        )

    def _networks(self, state: DesiredState) -> Iterator[Metric]:
        labels = ["network", "driver"]
        nets = GaugeMetricFamily(
            "netd_network_info",
            "Networks in the desired state (value is always 1)",
            labels=[*labels, "bridge", "internal"],
        )
        eps = GaugeMetricFamily("netd_network_endpoints", "Endpoints attached to a network", labels=labels)
        used = GaugeMetricFamily(
            "netd_network_addresses_in_use",
            "IPAM addresses taken (gateway, aux, endpoints)",
            labels=["network", "subnet"],
        )
        size = GaugeMetricFamily(
            "netd_network_addresses_size", "IPAM addresses a pool can hand out", labels=["network", "subnet"]
        )
        counts: dict[str, int] = {}
        for ep in state.endpoints.values():
            counts[ep.network] = counts.get(ep.network, 0) + 1
        for net in state.networks.values():
            nets.add_metric([net.name, net.driver, net.bridge, str(net.internal).lower()], 1)
            eps.add_metric([net.name, net.driver], counts.get(net.id, 0))
            for subnet, in_use, total in address_usage(net, state):
                used.add_metric([net.name, subnet], in_use)
                size.add_metric([net.name, subnet], total)
        yield nets
        yield eps
        yield used
        yield size
        yield GaugeMetricFamily("netd_netns", "Named network namespaces netd owns", value=len(state.netns))

    def _reconcile(self, s: ReconcileStats) -> Iterator[Metric]:
        runs = CounterMetricFamily("netd_reconciles", "Reconciles by outcome", labels=["outcome"])
        runs.add_metric(["ok"], s.ok)
        runs.add_metric(["error"], s.runs - s.ok)
        yield runs
        yield CounterMetricFamily(
            "netd_reconcile_changes", "Kernel changes applied by reconciles", value=s.changes
        )
        yield CounterMetricFamily("netd_reconcile_errors", "Objects a reconcile failed to apply", value=s.errors)
        hist = HistogramMetricFamily("netd_reconcile_duration_seconds", "Time a reconcile took", unit="")
        buckets = [(f"{b:g}", float(c)) for b, c in zip(DURATION_BUCKETS, s.duration_buckets, strict=True)]
        hist.add_metric([], [*buckets, ("+Inf", float(s.runs))], s.duration_sum)
        yield hist
        repairs = CounterMetricFamily(
            "netd_drift_repairs", "Changes no API call asked for (drift repaired), by kind", labels=["kind"]
        )
        for kind in ("netns", "bridge", "veth", "stale_link", "stale_netns", "sysctl", "firewall"):
            repairs.add_metric([kind], s.repairs_by_kind.get(kind, 0))
        yield repairs
        yield GaugeMetricFamily(
            "netd_last_reconcile_success_timestamp_seconds",
            "When a full reconcile last finished without errors (unix time; 0: never)",
            value=s.last_success,
        )
        yield GaugeMetricFamily(
            "netd_in_sync", "1 when the last reconcile applied everything", value=not s.last_errors
        )


INTERFACE_FIELDS = (
    ("receive_bytes", "Bytes received", "rx_bytes"),
    ("transmit_bytes", "Bytes transmitted", "tx_bytes"),
    ("receive_packets", "Packets received", "rx_packets"),
    ("transmit_packets", "Packets transmitted", "tx_packets"),
    ("receive_dropped", "Received packets dropped", "rx_dropped"),
    ("transmit_dropped", "Transmitted packets dropped", "tx_dropped"),
    ("receive_errors", "Receive errors", "rx_errors"),
    ("transmit_errors", "Transmit errors", "tx_errors"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def interface_text(state: DesiredState) -> str:
    """The per-interface counter families in the text exposition format.

    8 series per interface (8000 with 1000 endpoints): written directly, one f-string per sample, because
    prometheus-client's generic writer (label validation and escaping per sample) took ~80 ms for them.
    """
    owned: list[tuple[int, str]] = []
    for net in state.networks.values():
        index = ifindex(net.bridge)
        if index is not None:
            owned.append(
                (
                    index,
                    f'{{interface="{_label(net.bridge)}",kind="bridge",network="{_label(net.name)}",netns=""}}',
                )
            )
    names = {net.id: _label(net.name) for net in state.networks.values()}
    for ep in state.endpoints.values():
        index = ifindex(ep.host_ifname)
        if index is not None:
            ns = _label(ep.netns or ep.netns_path or "")
            net_name = names.get(ep.network, "")
            owned.append(
                (index, f'{{interface="{_label(ep.host_ifname)}",kind="veth",network="{net_name}",netns="{ns}"}}')
            )
    try:
        counters = link_counters() if owned else {}
    except OSError as exc:
        log.warning("metrics_link_stats_failed", error=str(exc))
        counters = {}
    rows = [(labels, counters[index]) for index, labels in owned if index in counters]
    lines: list[str] = []
    for suffix, doc, attr in INTERFACE_FIELDS:
        name = f"netd_interface_{suffix}_total"
        lines.append(f"# HELP {name} {doc} by an interface netd owns (host side)")
        lines.append(f"# TYPE {name} counter")
        lines.extend(f"{name}{labels} {getattr(c, attr)}" for labels, c in rows)
    return "\n".join(lines) + "\n"


class Metrics:
    """The registry: the scrape-time collector plus the event counters (API requests, DNS queries)."""

    def __init__(self, source: Source) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: counters start with the process (netd_start_time_seconds)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NetdCollector(source))
        self.state = source.state
        self.api_requests = Counter(
            "netd_api_requests",
            "API requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.api_latency = Histogram(
            "netd_api_request_duration_seconds",
            "API request latency by route and method",
            ["route", "method"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.dns_queries = Counter(
            "netd_dns_queries",
            "DNS queries answered by netd's resolver, by result",
            ["result"],
            registry=self.registry,
        )
        for result in ("answered", "nxdomain", "forwarded", "error"):
            self.dns_queries.labels(result)

    def render(self) -> bytes:
        from prometheus_client.exposition import generate_latest  # the first scrape pays for it, not start-up

        return generate_latest(self.registry) + interface_text(self.state()).encode()

    def observe_api(self, route: str, method: str, status: int, seconds: float) -> None:
        self.api_requests.labels(route, method, str(status)).inc()
        self.api_latency.labels(route, method).observe(seconds)

    def dns_query(self, result: str) -> None:
        """For the resolver: count one query (``answered``, ``nxdomain``, ``forwarded``, ``error``)."""
        self.dns_queries.labels(result).inc()


def metrics_app(render: Callable[[], bytes], token: str | None = None) -> web.Application:
    async def get_metrics(request: web.Request) -> web.Response:
        if token is not None and not _authorized(request, token):
            return web.Response(
                status=401,
                text="netd metrics: send Authorization: Bearer <the content of [metrics] token_file>\n",
                headers={"WWW-Authenticate": 'Bearer realm="netd"'},
            )
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE})

    async def index(request: web.Request) -> web.Response:
        return web.Response(text='netd metrics: <a href="/metrics">/metrics</a>\n', content_type="text/html")

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/", index)
    return app


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def read_token(path: Path) -> str:
    """The bearer token in ``[metrics] token_file`` (OSError/ValueError say why it is unusable)."""
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError("the file is empty")
    return token


async def serve(render: Callable[[], bytes], cfg: MetricsConfig, group: str | None) -> web.AppRunner | None:
    """The metrics listener ``cfg`` asks for (None: off); OSError/ValueError: it cannot be served."""
    if not cfg.listen:
        return None
    token = read_token(cfg.token_file) if cfg.token_file is not None else None
    runner = web.AppRunner(metrics_app(render, token), access_log=None)
    await runner.setup()
    try:
        path = cfg.unix_path
        if path is not None:  # 0660 with the API socket's group, never open to others (netd.ops.unixsock)
            path.parent.mkdir(parents=True, exist_ok=True)
            await start_private(web.UnixSite(runner, str(path)), path, 0o660, group)
        else:
            address = cfg.address
            assert address is not None
            await web.TCPSite(runner, *address, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("metrics_listening", address=cfg.listen, token=token is not None)
    return runner
