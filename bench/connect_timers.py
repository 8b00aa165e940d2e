"""Where a connect's time goes, by wall-clock timers around the functions of its path inside the daemon.

    .venv/bin/python bench/connect_timers.py [--n 200] [--rev REV]

py-spy (profile_netd.py) samples the event loop: with most of a connect spent awaiting a thread or the kernel,
it shows ~70% "waiting in select" without saying for what.  Here the daemon runs with bench/tracehook on its
PYTHONPATH (a sitecustomize that wraps the functions listed there with timers; netd has no such hook); N netns
are made first, then N connects are timed from the client, and the daemon's medians are printed when it exits.
Medians of nested timers do not add up exactly.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import BENCH, NETD_ENV, Host, bench_tag, use_revision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rev", help="benchmark netd as committed at this git revision (default: working tree)")
    ap.add_argument("--ports", action="store_true", help="each connect publishes one TCP port")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="netd-timers-") as d:
        use_revision(args.rev, Path(d))
        trace = Path(d) / "trace.txt"
        hook = str(BENCH / "tracehook")
        os.environ["PYTHONPATH"] = hook + (":" + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
        host = Host(Path(d) / "t", tag=bench_tag())
        try:
            host.boot()
            host.start(env={**NETD_ENV, "NETD_TRACE": str(trace)})
            api = host.api
            api.ok("POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": "10.88.0.0/16"}]}})
            for i in range(args.n):
                api.ok("POST", "/v1/netns", {"Name": f"e{i}"})
            ms = []
            for i in range(args.n):
                t0 = time.perf_counter()
                body: dict[str, Any] = {"Netns": f"e{i}"}
                if args.ports:
                    body["Ports"] = [{"HostPort": 20000 + i, "ContainerPort": 80, "Proto": "tcp"}]
                api.ok("POST", "/v1/networks/bench/connect", body)
                ms.append((time.perf_counter() - t0) * 1000)
            host.stop()  # SIGTERM: the daemon exits normally and writes the timers
        finally:
            host.cleanup()
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"client: connect p50 {statistics.median(ms):.2f} ms over {args.n} (load {load})")
        print(trace.read_text() if trace.exists() else "no timers written (did the daemon exit normally?)")


if __name__ == "__main__":
    main()
