"""Where netd's memory goes: RSS (anonymous and file-backed) and its biggest mappings, at start, after N netns and
after N connects on one bridge network (issue 8's RSS target: < 80 MiB with 1000 endpoints).

    .venv/bin/python bench/memory.py [--endpoints 1000] [--rev REV] [--env KEY=VALUE ...]

``--env`` passes extra environment to the daemon (e.g. ``MALLOC_MMAP_THRESHOLD_=131072`` to compare glibc
settings).  Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import peers
from common import NETD_ENV, Host, bench_tag, machine, netd_pid, use_revision, write_result

MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def rss(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon, RssFile in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def mappings(pid: int) -> collections.Counter[str]:
    """Resident KiB per mapping name ([heap], [anon], a library's path)."""
    out: collections.Counter[str] = collections.Counter()
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if MAPPING.match(line):
            parts = line.split()
            name = parts[5] if len(parts) > 5 else "[anon]"
        elif line.startswith("Rss:"):
            out[name] += int(line.split()[1])
    return out


def grew(before: collections.Counter[str], after: collections.Counter[str]) -> dict[str, float]:
    diff = {k: round((after[k] - before.get(k, 0)) / 1024, 1) for k in after}
    return {k: v for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:5] if v}


def measure(n: int, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    host = Host(tmp / "netd", tag=bench_tag())
    try:
        host.boot()
        host.start(env={**NETD_ENV, **env})
        pid = netd_pid(host)
        api = host.api
        api.ok("POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": peers.SUBNET}]}})
        m0, r0 = mappings(pid), rss(pid)
        for i in range(n):
            api.ok("POST", "/v1/netns", {"Name": f"e{i}"})
        m1, r1 = mappings(pid), rss(pid)
        t0 = time.perf_counter()
        for i in range(n):
            api.ok("POST", "/v1/networks/bench/connect", {"Netns": f"e{i}"})
        connect_s = time.perf_counter() - t0
        m2, r2 = mappings(pid), rss(pid)
        return {
            "endpoints": n,
            "rss_mib": {"start": r0, "netns": r1, "connected": r2},
            "grew_mib": {"netns": grew(m0, m1), "connect": grew(m1, m2)},
            "largest_mib": {k: round(v / 1024, 1) for k, v in m2.most_common(6)},
            "connect_s": round(connect_s, 1),
        }
    finally:
        host.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--rev", help="measure netd as committed at this git revision (default: working tree)")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the daemon's environment")
    args = ap.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    with tempfile.TemporaryDirectory(prefix="netd-bench-") as d:
        info: dict[str, Any] = {"machine": machine(), "netd": use_revision(args.rev, Path(d)), "env": env}
        info |= measure(args.endpoints, env, Path(d))
    r = info["rss_mib"]
    for stage, m in r.items():
        print(f"{stage:10s} VmRSS {m['VmRSS']:6.1f} MiB  anon {m['RssAnon']:6.1f}  file {m['RssFile']:5.1f}")
    print("grew:", info["grew_mib"])
    print("largest:", info["largest_mib"])
    print("wrote", write_result("memory", info))


if __name__ == "__main__":
    main()
