"""Services' load balancing: connection rate and connect latency through a VIP and the routing mesh against a
task's address directly, and the cost of adding a task to a service of 10 vs 1000 tasks.

    sudo .venv/bin/python bench/lb.py [--backend nftables|iptables] [--conns 2000] [--sizes 10,100,1000]

Runs in namespaces it creates (the firewall tests' topology: a "node" namespace with two bridges, three task
namespaces running ``tests/integration/portecho.py``, an "outside" client) and removes them.  The client is one
process in ``outside`` making sequential TCP connections (connect, send, read the answer, close); connect
latency is the time of ``connect()``.  The apply cost is measured on the API the reconciler calls
(``LbBackend.apply``): from a service with N-1 tasks to N (a delta), median and min of 9, with the commands sent; a
full apply of N for comparison.  Writes ``bench/results/lb.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration" / "firewall"))
sys.path.insert(0, str(ROOT))

from fwtopo import Topology, build_topology, sh, teardown_topology  # noqa: E402

from netd.firewall.lb import make_lb_backend  # noqa: E402
from netd.firewall.lb_model import Backend, LbNode, LbRuleset, PortSpec, Service, build_lb  # noqa: E402

ECHO = str(ROOT / "tests" / "integration" / "portecho.py")
NODE = LbNode("n1", ingress_network="ingress")
TASKS = {"c1": "10.90.1.2", "c2": "10.90.1.3", "c3": "10.90.2.2"}

CLIENT = r"""
import json, socket, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lat = []
fails = 0
t0 = time.perf_counter()
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    a = time.perf_counter()
    try:
        s.connect((addr, port))
        lat.append(time.perf_counter() - a)
        s.sendall(b"x")
        s.recv(256)
    except OSError:
        fails += 1
    finally:
        s.close()
wall = time.perf_counter() - t0
print(json.dumps({"lat": lat, "wall": wall, "fails": fails}))
"""


def service(addrs: list[str]) -> Service:
    backends: list[Backend] = []
    for i, a in enumerate(addrs):
        backends += [Backend(f"t{i}", IPv4Address(a), net, "n1") for net in ("front", "ingress")]
    return Service(
        "web",
        (("front", IPv4Address("10.90.1.200")), ("ingress", IPv4Address("10.255.0.2"))),
        (PortSpec("tcp", 18080, 8080),),
        backends=tuple(backends),
    )


def fake_addrs(n: int) -> list[str]:
    return [f"10.50.{i // 250}.{i % 250 + 1}" for i in range(n)]


def measure_paths(t: Topology, paths: dict[str, tuple[str, int]], n: int, rounds: int = 10) -> dict[str, object]:
    """``n`` connections per path, in ``rounds`` interleaved rounds, so that a shared machine's load swings
    hit every path alike."""
    acc: dict[str, dict[str, float | list[float]]] = {k: {"lat": [], "wall": 0.0, "fails": 0} for k in paths}
    for _ in range(rounds):
        for name, (addr, port) in paths.items():
            argv = [sys.executable, "-c", CLIENT, addr, str(port), str(n // rounds)]
            r = json.loads(sh("ip", "netns", "exec", t.outside, *argv, timeout=600).stdout)
            a = acc[name]
            a["lat"] += r["lat"]  # type: ignore[operator]
            a["wall"] += r["wall"]  # type: ignore[operator]
            a["fails"] += r["fails"]  # type: ignore[operator]
    out: dict[str, object] = {}
    for name, a in acc.items():
        lat = sorted(a["lat"])  # type: ignore[type-var]
        q = statistics.quantiles(lat, n=100)
        out[name] = {
            "conns_per_s": round(len(lat) / float(a["wall"]), 1),  # type: ignore[arg-type]
            "connect_p50_ms": round(statistics.median(lat) * 1000, 3),
            "connect_p99_ms": round(q[98] * 1000, 3),
            "fails": a["fails"],
        }
    return out


def apply_cost(kind: str, netns: str, sizes: list[int]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n in sizes:
        lb = make_lb_backend(kind, netns=netns)
        try:
            addrs = fake_addrs(n)
            small, big = build_lb([service(addrs[:-1])], NODE), build_lb([service(addrs)], NODE)
            asyncio.run(lb.apply(small))
            deltas, cmds = [], 0
            for _ in range(9):
                a = time.perf_counter()
                change = asyncio.run(lb.apply(big))
                deltas.append(time.perf_counter() - a)
                cmds = change.commands
                assert change.mode == "delta", change
                asyncio.run(lb.apply(small))
            asyncio.run(lb.remove_all())
            a = time.perf_counter()
            asyncio.run(lb.apply(big))
            full = time.perf_counter() - a
            a = time.perf_counter()
            build_lb([service(addrs)], NODE)
            build = time.perf_counter() - a
            rows.append(
                {
                    "tasks": n,
                    "add_nth_task_ms_p50": round(statistics.median(deltas) * 1000, 2),
                    "add_nth_task_ms_min": round(min(deltas) * 1000, 2),
                    "delta_commands": cmds,
                    "full_apply_ms": round(full * 1000, 2),
                    "build_ms": round(build * 1000, 2),
                }
            )
            asyncio.run(lb.remove_all())
        finally:
            lb.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="nftables", choices=["nftables", "iptables"])
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--sizes", default="10,100,1000")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it creates network namespaces")
    tag = f"nlb{os.getpid() % 100000}"
    t = Topology(tag, f"{tag}-h", f"{tag}-c1", f"{tag}-c2", f"{tag}-c3", f"{tag}-o")
    result: dict[str, object] = {"backend": args.backend, "load": os.getloadavg()}
    try:
        build_topology(t)
        for name in ("c1", "c2", "c3"):
            p = subprocess.Popen(
                ["ip", "netns", "exec", getattr(t, name), sys.executable, ECHO, "serve", name, "8080"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            t.procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        netns = f"/run/netns/{t.host}"
        lb = make_lb_backend(args.backend, netns=netns)
        try:
            rs: LbRuleset = build_lb([service(list(TASKS.values()))], NODE)
            asyncio.run(lb.apply(rs))
            paths = {
                "direct (task address)": ("10.90.1.2", 8080),
                "VIP": ("10.90.1.200", 8080),
                "routing mesh (node address)": ("10.90.100.1", 18080),
            }
            result["paths"] = measure_paths(t, paths, args.conns)
            asyncio.run(lb.remove_all())
        finally:
            lb.close()
        result["apply_cost"] = apply_cost(args.backend, netns, [int(s) for s in args.sizes.split(",")])
    finally:
        teardown_topology(t)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / f"lb-{args.backend}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
