"""Issue 7's numbers: /metrics scrape time with N endpoints, `netd-ctl status` wall time, daemon idle CPU.

    .venv/bin/python bench/metrics_scrape.py [--endpoints 1000] [--scrapes 30] [--idle 60]

Runs a production-like daemon (info logs, 30 s drift timer) in a throw-away host namespace; N endpoints in N
namespaces on one network.  A scrape is timed inside the host namespace by one Python process doing N
sequential HTTP GETs (the process start is not part of the number).  Idle CPU: the daemon's utime+stime over
``--idle`` seconds with nothing happening.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import NETD_ENV, Host, bench_tag, cpu_s, leftovers, machine, netd_pid, summary, write_result

SCRAPER = """
import json, sys, time, urllib.request
ms, size = [], 0
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    body = urllib.request.urlopen("http://127.0.0.1:9465/metrics", timeout=30).read()
    ms.append((time.perf_counter() - t0) * 1000)
    size = len(body)
print(json.dumps({"ms": ms, "bytes": size, "series": body.count(b"\\n") - body.count(b"\\n#")}))
"""
TARGETS = {"scrape_p50_ms": 50.0, "status_p50_ms": 150.0, "idle_cpu_percent": 0.5}


def run(n: int, scrapes: int, idle: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ndt-bench-") as d:
        host = Host(Path(d), tag=bench_tag())
        try:
            host.boot()
            host.start(env=NETD_ENV)
            pid = netd_pid(host)
            host.api.ok(
                "POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": "10.128.0.0/16"}]}}
            )
            t0 = time.perf_counter()
            for i in range(n):
                host.api.ok("POST", "/v1/netns", {"Name": f"m{i}"})
                host.api.ok("POST", "/v1/networks/bench/connect", {"Netns": f"m{i}"})
            setup_s = time.perf_counter() - t0
            out = subprocess.run(
                ["nsenter", f"--net={host.path}", sys.executable, "-c", SCRAPER, str(scrapes)],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            ).stdout
            scrape = json.loads(out)
            status_ms = []
            for _ in range(20):
                t = time.perf_counter()
                host.ctl("status")
                status_ms.append((time.perf_counter() - t) * 1000)
            time.sleep(2)  # let the last request's work settle
            c0, w0 = cpu_s(pid), time.monotonic()
            time.sleep(idle)
            idle_cpu = cpu_s(pid) - c0
            wall = time.monotonic() - w0
            return {
                "endpoints": n,
                "setup_s": round(setup_s, 1),
                "scrape_ms": summary(scrape["ms"]),
                "scrape_bytes": scrape["bytes"],
                "scrape_series": scrape["series"],
                "status_wall_ms": summary(status_ms),
                "idle_seconds": round(wall, 1),
                "idle_cpu_s": round(idle_cpu, 3),
                "idle_cpu_percent": round(100 * idle_cpu / wall, 3),
            }
        finally:
            host.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoints", type=int, default=1000)
    p.add_argument("--scrapes", type=int, default=30)
    p.add_argument("--idle", type=float, default=60.0)
    a = p.parse_args()
    res = run(a.endpoints, a.scrapes, a.idle)
    res["targets"] = TARGETS
    res["machine"] = machine()
    left = leftovers(["ndt-h-bn", "ndt-o-bn"])
    res["leftover_namespaces"] = left
    path = write_result("metrics_scrape", res)
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))
    print(f"written: {path}")
    if left:
        sys.exit(f"leftover namespaces: {left}")


if __name__ == "__main__":
    main()
