"""Issue 2's numbers: connect latency, cold replay, daemon RSS, `netd-ctl status` wall time.

    .venv/bin/python bench/netd_basic.py [--connects 200] [--replays 3]

Runs a real netd inside a throw-away host namespace (tests/integration/netdtest.py), never the machine's own.
Writes bench/results/netd_basic.json and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    NETD_ENV,
    Host,
    bench_tag,
    cpu_s,
    machine,
    netd_pid,
    rss_mib,
    summary,
    table,
    timer,
    use_revision,
    write_result,
)
from netdtest import NETD_CTL, in_ns

TARGETS = {"connect_p50_ms": 20.0, "status_ms": 150.0, "rss_mib": 64.0}


def connect_and_rss(tmp: Path, n: int) -> dict[str, Any]:
    host = Host(tmp / "connect", tag=bench_tag())
    try:
        host.boot()
        host.start(env=NETD_ENV)
        pid = netd_pid(host)
        time.sleep(0.5)  # let start-up garbage settle before reading RSS
        rss_start = rss_mib(pid)
        host.api.ok("POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": "10.128.0.0/16"}]}})
        names = [f"b{i}" for i in range(n)]
        for name in names:  # namespaces exist beforehand: only the connect is timed
            host.api.ok("POST", "/v1/netns", {"Name": name})
        cpu0 = cpu_s(pid)
        connect: list[float] = []
        for name in names:
            with timer() as t:
                status, body = host.api.request("POST", "/v1/networks/bench/connect", {"Netns": name})
            assert status == 201, (status, body)
            connect.append(t[0])
        cpu_connect = cpu_s(pid) - cpu0
        rss_after = rss_mib(pid)
        # read the kernel back once: the last endpoint is really there
        addr = in_ns(host.ns(names[-1]), "ip", "-o", "-4", "addr", "show", "eth0").stdout
        assert str(body["IPv4Address"]).split("/")[0] in addr, addr
        status_ms: list[float] = []
        sock = str(host.run_dir / "netd.sock")
        for _ in range(20):
            with timer() as t:
                subprocess.run([NETD_CTL, "--socket", sock, "status"], check=True, capture_output=True)
            status_ms.append(t[0])
        disconnect: list[float] = []
        for name in names:
            with timer() as t:
                status, body = host.api.request("POST", "/v1/networks/bench/disconnect", {"Netns": name})
            assert status == 204, (status, body)
            disconnect.append(t[0])
        return {
            "connect_ms": summary(connect),
            "disconnect_ms": summary(disconnect),
            "connect_cpu_s": round(cpu_connect, 2),
            "rss_mib_start": rss_start,
            "rss_mib_after_endpoints": rss_after,
            "endpoints": n,
            "status_ms": {"median": round(statistics.median(status_ms), 1), **summary(status_ms)},
        }
    except BaseException:
        print(host.log_text()[-3000:])
        raise
    finally:
        host.cleanup()


def cold_replay(tmp: Path, networks: int, per_net: int, runs: int) -> dict[str, Any]:
    host = Host(tmp / "replay", tag=bench_tag())
    try:
        host.boot()
        host.start(env=NETD_ENV)
        for i in range(networks):
            subnet = f"10.{130 + i // 200}.{i % 200}.0/24"
            host.api.ok("POST", "/v1/networks", {"Name": f"n{i}", "IPAM": {"Config": [{"Subnet": subnet}]}})
            for j in range(per_net):
                host.api.ok("POST", "/v1/netns", {"Name": f"n{i}e{j}"})
                host.api.ok("POST", f"/v1/networks/n{i}/connect", {"Netns": f"n{i}e{j}"})
        walls: list[float] = []
        reconcile_ms: list[float] = []
        for _ in range(runs):
            host.reboot()  # kill -9, lose the host namespace, /run and every netns in it
            with timer() as t:
                host.start(env=NETD_ENV)  # the API socket opens after the start-up reconcile
            walls.append(t[0])
            st = host.api.ok("GET", "/v1/status")
            assert st["endpoints"] == networks * per_net and st["reconcile"]["in_sync"], st
            reconcile_ms.append(st["reconcile"]["last_ms"])
            veths = in_ns(host.path, "ip", "-o", "link", "show", "type", "veth").stdout.count("master")
            assert veths == networks * per_net, veths
            addr = in_ns(host.ns(f"n{networks - 1}e{per_net - 1}"), "ip", "-o", "-4", "addr", "show", "eth0")
            assert "inet " in addr.stdout, addr.stdout
        return {
            "networks": networks,
            "endpoints": networks * per_net,
            "wall_ms": [round(w, 1) for w in walls],
            "wall_ms_median": round(statistics.median(walls), 1),
            "startup_reconcile_ms": reconcile_ms,
        }
    except BaseException:
        print(host.log_text()[-3000:])
        raise
    finally:
        host.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connects", type=int, default=200)
    ap.add_argument("--networks", type=int, default=20)
    ap.add_argument("--per-network", type=int, default=10)
    ap.add_argument("--replays", type=int, default=3)
    ap.add_argument("--rev", help="benchmark netd as committed at this git revision (default: working tree)")
    args = ap.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="netd-bench-") as d:
        info["netd"] = use_revision(args.rev, Path(d))
        tmp = Path(d)
        conn = connect_and_rss(tmp, args.connects)
        replay = cold_replay(tmp, args.networks, args.per_network, args.replays)
    c, s = conn["connect_ms"], conn["status_ms"]
    met = {
        "connect_p50": c["p50"] < TARGETS["connect_p50_ms"],
        "status": s["median"] < TARGETS["status_ms"],
        "rss": conn["rss_mib_after_endpoints"] < TARGETS["rss_mib"],
    }
    rows = [
        [
            f"network connect (API, n={c['count']})",
            f"p50 {c['p50']} / p95 {c['p95']} / max {c['max']} ms",
            "p50 < 20 ms",
            "yes" if met["connect_p50"] else "NO",
        ],
        [
            f"network disconnect (API, n={conn['disconnect_ms']['count']})",
            f"p50 {conn['disconnect_ms']['p50']} / p95 {conn['disconnect_ms']['p95']} ms",
            "",
            "",
        ],
        [
            f"cold replay {replay['networks']} nets x {args.per_network} eps (start -> API up)",
            f"median {replay['wall_ms_median']} ms of {replay['wall_ms']}",
            "",
            "",
        ],
        ["daemon RSS after start", f"{conn['rss_mib_start']} MiB", "", ""],
        [
            f"daemon RSS after {conn['endpoints']} endpoints",
            f"{conn['rss_mib_after_endpoints']} MiB",
            "< 64 MiB",
            "yes" if met["rss"] else "NO",
        ],
        [
            "netd-ctl status wall (20 runs)",
            f"median {s['median']} / max {s['max']} ms",
            "< 150 ms",
            "yes" if met["status"] else "NO",
        ],
    ]
    print(table(rows, ["measure", "result", "target", "met"]))
    path = write_result(
        "netd_basic",
        {"machine": info, "targets": TARGETS, "met": met, "connect": conn, "replay": replay},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
