"""Metric naming, IPAM usage, the RTM_GETSTATS decoder, the reconcile histogram: no kernel, no daemon."""

from __future__ import annotations

import re
import struct
from ipaddress import ip_interface

import pytest

from netd.core import ipam
from netd.core.config import Settings, load_settings
from netd.core.errors import InvalidError
from netd.core.model import DesiredState, Endpoint, Network
from netd.engine.reconciler import RunReport
from netd.kernel import stats as nlstats
from netd.ops.metrics import DURATION_BUCKETS, Metrics, ReconcileStats, Source, address_usage


def _state() -> DesiredState:
    cfg = ipam.validate_pool("172.30.0.0/24")
    net = Network(id="n" * 64, name="app", bridge="br-nope-x", ipam=[cfg])
    eps = {}
    for i in (2, 3):
        ep = Endpoint(
            id=str(i) * 64,
            network=net.id,
            netns=f"w{i}",
            ifname="eth0",
            host_ifname=f"veth-nope-{i}",
            mac="02:00:00:00:00:01",
            ipv4=ip_interface(f"172.30.0.{i}/24"),
        )  # type: ignore[arg-type]
        eps[ep.id] = ep
    return DesiredState(networks={"app": net}, endpoints=eps)


def test_address_usage_counts_gateway_and_endpoints() -> None:
    st = _state()
    assert address_usage(st.networks["app"], st) == [("172.30.0.0/24", 3, 254)]


def test_exposition_follows_prometheus_conventions() -> None:
    stats = ReconcileStats()
    stats.reconciled(RunReport("start", (), {}, 0.02, full=True))
    m = Metrics(
        Source(state=_state, stats=stats, firewall_name="none", applied_rules=lambda: None, ready=lambda: True)
    )
    m.observe_api("/v1/networks", "GET", 200, 0.001)
    text = m.render().decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert all(name.startswith("netd_") for name in types)
    for name, kind in types.items():
        assert (kind == "counter") == name.endswith("_total") or kind == "histogram", name
    assert types["netd_reconcile_duration_seconds"] == "histogram"
    assert 'netd_network_endpoints{driver="bridge",network="app"} 2.0' in text
    assert 'netd_reconcile_duration_seconds_bucket{le="0.025"} 1.0' in text
    assert 'netd_api_requests_total{method="GET",route="/v1/networks",status="200"} 1.0' in text
    assert "_created" not in text


def test_histogram_buckets_are_cumulative() -> None:
    s = ReconcileStats()
    for sec in (0.001, 0.03, 100.0):
        s.reconciled(RunReport("api", ("EnsureVeth",), {}, sec, full=False))
    assert s.duration_buckets[0] == 1 and s.duration_buckets[-1] == 2
    assert len(s.duration_buckets) == len(DURATION_BUCKETS) and s.last_success == 0.0
    assert (s.runs, s.changes, s.repairs) == (3, 3, 0)  # API changes are not drift repairs


def test_drift_repairs_are_counted_by_kind() -> None:
    s = ReconcileStats()
    s.reconciled(RunReport("timer", ("EnsureNetns", "MarkNetns", "EnsureVeth", "ApplyFirewall"), {}, 0.1, True))
    s.firewall_repaired()
    assert s.repairs == 5 and s.last_success > 0
    assert s.repairs_by_kind == {"netns": 1, "veth": 1, "firewall": 2}


def _newstats(index: int, values: tuple[int, ...]) -> bytes:
    attr_payload = struct.pack("=8Q", *values) + b"\0" * (8 * 16)  # the rest of rtnl_link_stats64
    attr = struct.pack("=HH", 4 + len(attr_payload), nlstats.IFLA_STATS_LINK_64) + attr_payload
    body = struct.pack("=BBHII", 0, 0, 0, index, 1) + attr
    return struct.pack("=IHHII", 16 + len(body), nlstats.RTM_NEWSTATS, 2, 1, 0) + body


def test_rtm_getstats_decoder() -> None:
    done = struct.pack("=IHHII", 20, nlstats.NLMSG_DONE, 2, 1, 0) + b"\0" * 4
    out: dict[int, nlstats.LinkCounters] = {}
    assert nlstats.parse(_newstats(7, (1, 2, 3, 4, 5, 6, 7, 8)) + _newstats(9, (9,) * 8), out) is False
    assert nlstats.parse(done, out) is True
    assert out[7] == nlstats.LinkCounters(1, 2, 3, 4, 5, 6, 7, 8) and out[9].tx_dropped == 9


def test_metrics_listen_is_validated_with_the_key_named(tmp_path: object) -> None:
    assert Settings(metrics={"listen": ""}).metrics.address is None  # type: ignore[arg-type]
    assert Settings(metrics={"listen": "[::1]:9100"}).metrics.address == ("::1", 9100)  # type: ignore[arg-type]
    from pathlib import Path

    cfg = Path(str(tmp_path)) / "n.toml"
    cfg.write_text('[metrics]\nlisten = "0.0.0.0:70000"\n')
    with pytest.raises(InvalidError) as e:
        load_settings(cfg)
    assert "metrics.listen" in e.value.message and "HOST:PORT" in e.value.message
