"""The cost of a full reconcile pass (the drift timer, ``netd-ctl reconcile``) and of ``check`` at N endpoints,
with the namespace side of every endpoint observed (issue 12.3: addresses, routes, state, MAC, MTU inside each
namespace, as CNI's CHECK), and what a connect costs meanwhile (the scoped connect reads no namespace side).

    sudo .venv/bin/python bench/full_pass.py [--endpoints 1000] [--runs 5] [--rev REV]

Run it with ``--rev <commit before the change>`` and without, in one sitting, to compare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import NETD_ENV, Host, bench_tag, machine, netd_pid, rss_mib, summary, use_revision, write_result


def measure(endpoints: int, runs: int, tmp: Path) -> dict[str, Any]:
    host = Host(tmp / "full-pass", tag=bench_tag())
    try:
        host.boot()
        host.start(env=NETD_ENV)
        api = host.api
        api.ok("POST", "/v1/networks", {"Name": "fp", "IPAM": {"Config": [{"Subnet": "10.150.0.0/20"}]}})
        connect_ms: list[float] = []
        for i in range(endpoints):
            api.ok("POST", "/v1/netns", {"Name": f"fp{i}"})
            t0 = time.perf_counter()
            api.ok("POST", "/v1/networks/fp/connect", {"Netns": f"fp{i}"})
            connect_ms.append((time.perf_counter() - t0) * 1000)
        full_ms: list[float] = []
        pass_ms: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            answer = api.ok("POST", "/v1/reconcile", {})
            full_ms.append((time.perf_counter() - t0) * 1000)
            assert answer["changes"] == 0 and not answer["errors"], answer
            pass_ms.append(float(answer["reconcile"]["last_ms"]))
        check_ms: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            status, body = api.request("GET", "/v1/check")
            check_ms.append((time.perf_counter() - t0) * 1000)
            assert status == 200 and body["in_sync"], body
        return {
            "endpoints": endpoints,
            "connect_ms": summary(connect_ms),
            "full_pass_request_ms": summary(full_ms),
            "full_pass_reconcile_ms": summary(pass_ms),
            "check_ms": summary(check_ms),
            "full_pass_median_ms": round(statistics.median(pass_ms), 1),
            "rss_mib": rss_mib(netd_pid(host)),
        }
    except BaseException:
        print(host.log_text()[-3000:])
        raise
    finally:
        host.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rev", help="measure netd as committed at this git revision (default: working tree)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="netd-bench-") as d:
        info: dict[str, Any] = {"machine": machine(), "netd": use_revision(args.rev, Path(d))}
        info |= measure(args.endpoints, args.runs, Path(d))
    print(f"netd {info['netd']}  endpoints {info['endpoints']}")
    for key in ("connect_ms", "full_pass_reconcile_ms", "full_pass_request_ms", "check_ms"):
        s = info[key]
        print(f"{key:24s} p50 {s['p50']:8.1f}  p95 {s['p95']:8.1f}  max {s['max']:8.1f}")
    print("wrote", write_result("full_pass", info))


if __name__ == "__main__":
    main()
