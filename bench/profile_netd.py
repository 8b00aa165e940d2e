"""Where netd spends its time: py-spy on the daemon during N connects, and during a cold replay.

    .venv/bin/pip install -e '.[bench]'        # py-spy, for the benchmarks only
    .venv/bin/python bench/profile_netd.py [--connects 200] [--networks 50] [--endpoints 1000]
    .venv/bin/python bench/profile_netd.py --only connect --connects 1000 --tail 100 [--ports]   # the last 100

Samples every thread including idle time (``--idle``): a stack ending in the event loop's ``select`` is time
spent waiting (for the kernel, the socket, a thread), the rest is Python CPU.  Prints the top functions by
self and by inclusive samples, writes bench/results/profile-*.txt (collapsed stacks, for flamegraph tools)
and bench/results/profile.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import NETD_ENV, RESULTS, Host, bench_tag, netd_pid, use_revision, write_result
from netdtest import NETD, VENV_BIN
from replay import _spread, subnet

PYSPY = str(VENV_BIN / "py-spy")
FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")
WAIT = ("select (selectors.py)", "_run_once (asyncio/base_events.py)")


def short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    f = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in f:
            f = f.split(marker, 1)[1]
    return f"{m.group('fn')} ({f})"


def analyse(raw: Path, top: int = 18) -> dict[str, Any]:
    """Self and inclusive sample shares per function, main (event-loop) thread only, from py-spy's raw stacks.

    With ``--idle`` every sample is wall time; a stack ending in the selector's ``select`` is the loop waiting
    (for the kernel's netlink answers, the API socket, worker threads)."""
    selfc: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = waiting = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        frames = [short(f) for f in stack.split(";")]
        if "main (netd/daemon.py)" not in frames:
            continue  # idle worker threads of the default executor
        count = int(n)
        total += count
        if frames[-1].startswith("EpollSelector.select ("):
            waiting += count
        selfc[frames[-1]] += count
        for f in set(frames):
            if f.split(" (", 1)[-1].startswith(("netd/", "pyroute2/", "aiohttp/", "copy", "json", "pydantic")):
                incl[f] += count

    def share(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * v / max(total, 1), 1)) for f, v in c.most_common(top)]

    return {
        "samples_main_thread": total,
        "waiting_pct": round(100 * waiting / max(total, 1), 1),
        "self": share(selfc),
        "inclusive": share(incl),
    }


def spy_record(out: Path) -> list[str]:
    """py-spy's record options used for every profile: all threads, idle samples, raw collapsed stacks."""
    return [PYSPY, "record", "--idle", "--threads", "--rate", "250", "--format", "raw", "--output", str(out)]


def spy_attach(pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*spy_record(out), "--pid", str(pid), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def profile_connect(tmp: Path, n: int, tail: int = 0, ports: bool = False) -> dict[str, Any]:
    """``tail``: sample only the last ``tail`` connects (what grows with N), the others made before; ``ports``:
    each connect publishes one TCP port."""
    host = Host(tmp / "prof-connect", tag=bench_tag())
    out = RESULTS / "profile-connect.txt"
    try:
        host.boot()
        host.start(env=NETD_ENV)
        pid = netd_pid(host)
        host.api.ok("POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": "10.88.0.0/16"}]}})
        for i in range(n):
            host.api.ok("POST", "/v1/netns", {"Name": f"e{i}"})
        first = n - tail if 0 < tail < n else 0

        def body(i: int) -> dict[str, Any]:
            ports_ = [{"HostPort": 20000 + i, "ContainerPort": 80, "Proto": "tcp"}] if ports else []
            return {"Netns": f"e{i}", "Ports": ports_}

        for i in range(first):
            host.api.ok("POST", "/v1/networks/bench/connect", body(i))
        spy = spy_attach(pid, out)
        time.sleep(1.0)  # py-spy attached
        t0 = time.perf_counter()
        reconcile_ms = []
        for i in range(first, n):
            host.api.ok("POST", "/v1/networks/bench/connect", body(i))
            reconcile_ms.append(host.api.ok("GET", "/v1/status")["reconcile"]["last_ms"])
        wall = time.perf_counter() - t0
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
        res = analyse(out)
        res |= {
            "connects": n,
            "sampled": n - first,
            "ports": ports,
            "wall_s": round(wall, 2),
            "reconcile_ms_median": sorted(reconcile_ms)[len(reconcile_ms) // 2],
        }
        return res
    finally:
        host.cleanup()


def profile_replay(tmp: Path, networks: int, endpoints: int) -> dict[str, Any]:
    host = Host(tmp / "prof-replay", tag=bench_tag())
    out = RESULTS / "profile-replay.txt"
    try:
        host.boot()
        host.start(env=NETD_ENV)
        for i in range(networks):
            host.api.ok("POST", "/v1/networks", {"Name": f"n{i}", "IPAM": {"Config": [{"Subnet": subnet(i)[0]}]}})
        for net, j in _spread(networks, endpoints):
            host.api.ok("POST", "/v1/netns", {"Name": f"n{net}e{j}"})
            host.api.ok("POST", f"/v1/networks/n{net}/connect", {"Netns": f"n{net}e{j}"})
        host.reboot()
        host.write_config()
        # py-spy starts netd itself (nsenter execs netd, so py-spy's child is the daemon): nothing is missed
        host.spawn(
            [*spy_record(out), "--", "nsenter", f"--net={host.path}", NETD, "--config", str(host.config_path)],
            NETD_ENV,
        )
        t0 = time.perf_counter()
        host.wait_ready(timeout=120)
        wall = time.perf_counter() - t0
        st = host.api.ok("GET", "/v1/status")
        child = int(Path(f"/proc/{host.proc.pid}/task/{host.proc.pid}/children").read_text().split()[0])
        os.kill(child, signal.SIGTERM)  # netd stops; py-spy writes the profile and exits
        host.proc.wait(60)
        host.proc = None
        res = analyse(out)
        res |= {
            "networks": networks,
            "endpoints": endpoints,
            "wall_s": round(wall, 2),
            "startup_reconcile_ms": st["reconcile"]["last_ms"],
        }
        return res
    finally:
        host.cleanup()


def show(title: str, r: dict[str, Any]) -> None:
    print(
        f"\n== {title}: {r['samples_main_thread']} samples (main thread, 250/s), "
        f"{r['waiting_pct']}% waiting in the event loop's select"
    )
    print("  self:")
    for f, p in r["self"]:
        print(f"    {p:5.1f}%  {f}")
    print("  inclusive:")
    for f, p in r["inclusive"]:
        print(f"    {p:5.1f}%  {f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connects", type=int, default=200)
    ap.add_argument("--networks", type=int, default=50)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--rev", help="benchmark netd as committed at this git revision (default: working tree)")
    ap.add_argument("--only", choices=["connect", "replay"], help="profile just one of the two")
    ap.add_argument("--tail", type=int, default=0, help="sample only the last TAIL connects (growth along N)")
    ap.add_argument("--ports", action="store_true", help="each connect publishes one TCP port")
    args = ap.parse_args()
    if not shutil.which(PYSPY):
        raise SystemExit(f"{PYSPY} not found: .venv/bin/pip install -e '.[bench]'")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="netd-prof-") as d:
        source = use_revision(args.rev, Path(d))
        conn: dict[str, Any] = {}
        rep: dict[str, Any] = {}
        if args.only != "replay":
            conn = profile_connect(Path(d), args.connects, args.tail, args.ports)
            show(f"connect x{args.connects}" + (f" (last {args.tail} sampled)" if args.tail else ""), conn)
        if args.only != "connect":
            rep = profile_replay(Path(d), args.networks, args.endpoints)
            show(f"cold replay {args.networks} x {args.endpoints}", rep)
    print(f"wrote {write_result('profile', {'netd': source, 'connect': conn, 'replay': rep})}")


if __name__ == "__main__":
    main()
