"""Issue 14: does a connect with a published port stay flat up to N = 1000, and what does netd cost idle then?

    sudo .venv/bin/python bench/ports_flat.py [--n 1000] [--idle 30] [--revs main,WORKTREE]
        [--variants ports,plain]

For each revision (``WORKTREE`` = the working tree; anything else is ``git archive``d, as ``--rev`` elsewhere) and
each variant, in one run, interleaved: a fresh netd, one bridge network, N namespaces made first, then N
connects through the API, each publishing one TCP port (``ports``) or none (``plain``).  Reported: connect p50 /
p95, the median of the first 10 and of the last 10 connects, netd's CPU seconds per connect (utime + stime
over the connects), then netd's idle CPU over ``--idle`` seconds with everything connected (the 1 s firewall
check and nothing else: the drift timer is ``--reconcile-interval``, 600 s by default, so that no full pass falls
in the window), and VmRSS.  Writes bench/results/ports_flat.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    NETD_ENV,
    Host,
    bench_tag,
    cpu_s,
    first_last,
    machine,
    netd_pid,
    rss_mib,
    summary,
    table,
    use_revision,
    write_result,
)

NET = {"Name": "bench", "IPAM": {"Config": [{"Subnet": "10.133.0.0/16"}]}}


def run(tmp: Path, rev: str, env: dict[str, str], n: int, ports: bool, idle: float) -> dict[str, Any]:
    """One fresh daemon, N connects, then the idle window."""
    host = Host(tmp / f"flat-{rev}-{int(ports)}", tag=bench_tag())
    try:
        host.boot()
        host.start(env={**NETD_ENV, **env})
        pid = netd_pid(host)
        host.api.ok("POST", "/v1/networks", NET)
        for i in range(n):
            host.api.ok("POST", "/v1/netns", {"Name": f"p{i}"})
        ms: list[float] = []
        cpu0 = cpu_s(pid)
        for i in range(n):
            body: dict[str, Any] = {"Netns": f"p{i}"}
            if ports:
                body["Ports"] = [{"HostPort": 20000 + i, "ContainerPort": 80, "Proto": "tcp"}]
            t0 = time.perf_counter()
            host.api.ok("POST", "/v1/networks/bench/connect", body)
            ms.append((time.perf_counter() - t0) * 1000)
        cpu_connect = cpu_s(pid) - cpu0
        time.sleep(3)  # let the last reconcile and the first firewall checks after it pass
        cpu1, t1 = cpu_s(pid), time.monotonic()
        time.sleep(idle)
        idle_pct = (cpu_s(pid) - cpu1) / (time.monotonic() - t1) * 100
        return {
            "rev": rev,
            "ports": ports,
            "n": n,
            "connect_ms": summary(ms),
            "first_last": first_last(ms),
            "cpu_ms_per_connect": round(cpu_connect / n * 1000, 2),
            "idle_cpu_pct": round(idle_pct, 2),
            "rss_mib": rss_mib(pid),
        }
    finally:
        host.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--revs", default="WORKTREE")
    ap.add_argument("--variants", default="ports,plain")
    ap.add_argument("--reconcile-interval", default="600", help="the daemon's drift timer, seconds")
    args = ap.parse_args()
    out: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="netd-flat-") as d:
        envs: dict[str, dict[str, str]] = {}
        out["netd"] = {}
        for rev in args.revs.split(","):
            where = Path(d) / f"src-{len(envs)}"
            out["netd"][rev] = use_revision(None if rev == "WORKTREE" else rev, where)
            # per run, not for the whole process: use_revision sets it globally
            envs[rev] = {
                "PYTHONPATH": os.environ.pop("PYTHONPATH", ""),
                "NETD_RECONCILE_INTERVAL": args.reconcile_interval,
            }
        for variant in args.variants.split(","):
            for rev, env in envs.items():
                r = run(Path(d), rev.replace("/", "_"), env, args.n, variant == "ports", args.idle)
                r["load"] = os.getloadavg()
                out["runs"].append(r)
                print(f"{rev} {variant}: {r}", flush=True)
    out["load_after"] = os.getloadavg()
    rows = [
        [
            r["rev"],
            "1 port" if r["ports"] else "none",
            f"{r['connect_ms']['p50']} / {r['connect_ms']['p95']}",
            f"{r['first_last']['first10']} -> {r['first_last']['last10']} (x{r['first_last']['ratio']})",
            str(r["cpu_ms_per_connect"]),
            str(r["idle_cpu_pct"]),
            str(r["rss_mib"]),
            f"{r['load'][0]:.1f}",
        ]
        for r in out["runs"]
    ]
    hdr = ["rev", "published", "connect p50 / p95 ms", "first 10 -> last 10", "CPU ms/connect", "idle CPU %"]
    print(table(rows, [*hdr, "RSS MiB", "load"]))
    print(f"N = {args.n}; load {out['load_before']} -> {out['load_after']}")
    write_result("ports_flat", out)


if __name__ == "__main__":
    main()
