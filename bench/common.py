"""Shared helpers for the benchmarks: statistics, process accounting, machine facts, result files.

Everything networking happens in namespaces the benchmarks create (tests/integration/netdtest.py's Host for
netd, a throw-away "outer" namespace per peer tool) and is removed at the end, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(REPO / "tests" / "integration"))

from netdtest import Host  # noqa: E402

__all__ = ["Host"]

# A production-like daemon: info logs, the default 120 s drift timer (the harness test config says debug/5 s).
NETD_ENV = {"NETD_LOG_LEVEL": "info", "NETD_RECONCILE_INTERVAL": "120"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def use_revision(rev: str | None, tmp: Path) -> dict[str, str]:
    """Benchmark netd as committed at ``rev`` (``git archive``), not the working tree others may be editing.

    The daemon and netd-ctl (children of this process) import netd from the extracted copy: PYTHONPATH comes
    before the venv's editable-install finder.  Returns what was benchmarked, for the result file."""
    git = ["git", "-C", str(REPO)]
    if rev is None:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
        dirty = subprocess.run([*git, "status", "--porcelain", "netd"], capture_output=True, text=True).stdout
        return {"source": "working tree", "head": head.strip(), "netd_dirty": str(bool(dirty.strip()))}
    sha = subprocess.run([*git, "rev-parse", "--short", rev], check=True, capture_output=True, text=True).stdout
    src = tmp / "src"
    src.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run([*git, "archive", rev, "netd"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    os.environ["PYTHONPATH"] = str(src)
    return {"source": f"git archive {rev}", "head": sha.strip()}


def bench_tag() -> str:
    """A Host tag that marks the namespaces as the benchmark's (ndt-h-bnXXXX), for the leftover check."""
    return "bn" + secrets.token_hex(2)


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary(ms: Sequence[float]) -> dict[str, float | int]:
    """p50/p95/max/total of per-operation milliseconds (empty: count 0 only)."""
    if not ms:
        return {"count": 0}
    return {
        "count": len(ms),
        "p50": round(pct(ms, 50), 2),
        "p95": round(pct(ms, 95), 2),
        "max": round(max(ms), 2),
        "mean": round(statistics.fmean(ms), 2),
        "total_s": round(sum(ms) / 1000, 3),
    }


def first_last(ms: Sequence[float], k: int = 10) -> dict[str, float | None]:
    """Median of the first k and last k operations, and their ratio (does the per-op cost grow with N?)."""
    if len(ms) < k:
        return {"first10": None, "last10": None, "ratio": None}
    a, b = statistics.median(ms[:k]), statistics.median(ms[-k:])
    return {"first10": round(a, 2), "last10": round(b, 2), "ratio": round(b / a, 2) if a else None}


def netd_pid(host: Host) -> int:
    """The netd process: the harness runs ``nsenter --net=... netd``; nsenter execs, so the pid is netd's."""
    assert host.proc is not None
    pid = host.proc.pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    exe = os.readlink(f"/proc/{pid}/exe")
    if "nsenter" in exe or not any(a.endswith(b"/netd") for a in cmdline):
        raise RuntimeError(f"pid {pid} is not netd (exe {exe}, cmdline {cmdline!r})")
    status, _ = host.api.request("GET", "/v1/status")
    assert status == 200
    reported = host.api.ok("GET", "/v1/status")["pid"]
    if reported != pid:
        raise RuntimeError(f"netd reports pid {reported}, the Popen pid is {pid}")
    return pid


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    os_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kernel": platform.release(),
        "os": os_name,
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def pkg_version(name: str) -> str | None:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {**data, "machine": {**data.get("machine", {}), "loadavg_end": [round(x, 2) for x in os.getloadavg()]}}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed milliseconds."""
    out: list[float] = []
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out.append((time.perf_counter() - t0) * 1000)


def table(rows: list[list[str]], header: list[str]) -> str:
    """A GitHub-markdown table (also readable on a terminal)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def leftovers(prefixes: Sequence[str]) -> list[str]:
    """Namespaces with one of our prefixes still present (should be none after a run)."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    names = [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]
    return [n for n in names if n.startswith(tuple(prefixes))]
