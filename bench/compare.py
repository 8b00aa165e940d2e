"""Issue 8: netd side by side with the CNI bridge plugin, netavark, the `ip -batch` floor and (issue 14) the
one-process Python-netlink floor (bench/pyfloor.py, ``--tools pyfloor``).

    .venv/bin/python bench/compare.py [--sizes 50,200,1000] [--budget 30] [--tools netd,cni,...] [--no-replay]

One bridge network with NAT, N endpoints attached one by one then detached one by one, per tool, each tool in
its own throw-away namespace (netd: tests/integration/netdtest.py's Host; the others: bench/peers.py).  Each
phase (attach, detach) has a time budget in seconds; a tool that runs out is reported with how far it got.
Then a cold replay (reboot simulation) of many networks x endpoints for netd and for the floor.
Writes bench/results/compare.json, prints the tables (bench/README.md shows the latest).
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peers
import replay
from common import (
    NETD_ENV,
    Host,
    bench_tag,
    cpu_s,
    first_last,
    leftovers,
    machine,
    netd_pid,
    pkg_version,
    rss_mib,
    summary,
    use_revision,
    write_result,
)
from common import table as md_table
from peers import Cni, IpBatch, Netavark, Tool, inside, netns_batch, settle
from pyfloor import PyFloor

ALL_TOOLS = ["netd", "netd+ports", "cni", "cni+portmap", "netavark", "floor", "pyfloor"]
PREFIX = "nbx-"


class NetdTool:
    """netd through its API, as a runtime would: connect/disconnect of netd-owned namespaces."""

    def __init__(self, host: Host, ports: bool = False) -> None:
        self.name = "netd+ports" if ports else "netd"
        self.host = host
        self.ports = ports
        self.pid = 0

    def prepare(self, n: int) -> None:
        self.host.boot()
        self.host.start(env=NETD_ENV)
        self.pid = netd_pid(self.host)
        api = self.host.api
        api.ok("POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": peers.SUBNET}]}})
        for i in range(n):
            api.ok("POST", "/v1/netns", {"Name": f"e{i}"})

    def body(self, i: int) -> dict[str, Any]:
        b: dict[str, Any] = {"Netns": f"e{i}"}
        if self.ports:
            b["Ports"] = [{"HostPort": 20000 + i, "ContainerPort": 80, "Proto": "tcp"}]
        return b

    def attach(self, i: int) -> None:
        status, data = self.host.api.request("POST", "/v1/networks/bench/connect", self.body(i))
        if status != 201:
            raise RuntimeError(f"connect e{i} -> {status} {data}")

    def detach(self, i: int) -> None:
        status, data = self.host.api.request("POST", "/v1/networks/bench/disconnect", {"Netns": f"e{i}"})
        if status != 204:
            raise RuntimeError(f"disconnect e{i} -> {status} {data}")


def timed_phase(op: Callable[[int], None], items: list[int], budget: float) -> tuple[list[float], bool]:
    """Run ``op`` on each item, timing each; stop when the budget (seconds) is spent."""
    out: list[float] = []
    deadline = time.monotonic() + budget
    for i in items:
        if time.monotonic() > deadline:
            return out, True
        t0 = time.perf_counter()
        op(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out, False


def measure(tool: Tool, n: int, budget: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    tool.prepare(n)
    prep_s = time.perf_counter() - t0
    pid = getattr(tool, "pid", 0)
    cpu0 = cpu_s(pid) if pid else 0.0
    attach, a_over = timed_phase(tool.attach, list(range(n)), budget)
    res: dict[str, Any] = {"tool": tool.name, "n": n, "prepare_s": round(prep_s, 2)}
    if pid:
        res["rss_mib_attached"] = rss_mib(pid)
        res["cpu_s_attach"] = round(cpu_s(pid) - cpu0, 2)
        cpu0 = cpu_s(pid)
    detach, d_over = timed_phase(tool.detach, list(range(len(attach))), budget)
    if pid:
        res["cpu_s_detach"] = round(cpu_s(pid) - cpu0, 2)
        res["rss_mib_end"] = rss_mib(pid)
    res |= {
        "attach_ms": summary(attach),
        "detach_ms": summary(detach),
        "attach_first_last": first_last(attach),
        "over_budget": {"attach": a_over, "detach": d_over},
    }
    return res


def run_peer(name: str, n: int, budget: float, tmp: Path) -> dict[str, Any]:
    tag = secrets.token_hex(2)
    outer = f"{PREFIX}o-{tag}"
    names = [f"{PREFIX}{tag}-{i}" for i in range(n)]
    subprocess.run(["ip", "netns", "add", outer], check=True)
    try:
        subprocess.run(["ip", "-n", outer, "link", "set", "lo", "up"], check=True)
        netns_batch("add", names)
        work = tmp / f"{name}-{n}-{tag}"
        work.mkdir(parents=True)
        tool: Tool
        if name in ("cni", "cni+portmap"):
            tool = Cni(names, work, portmap=name == "cni+portmap")
        elif name == "netavark":
            tool = Netavark(names, work)
        elif name == "netavark+port":
            tool = Netavark(names, work, ports=True)
        elif name == "pyfloor":
            tool = PyFloor(names, peers.SUBNET, peers.GATEWAY, peers.ip_of)
        else:
            tool = IpBatch(names)
        with inside(f"/run/netns/{outer}"):
            return measure(tool, n, budget)
    finally:
        netns_batch("del", names)
        subprocess.run(["ip", "netns", "del", outer], check=False)


def run_netd(ports: bool, n: int, budget: float, tmp: Path) -> dict[str, Any]:
    host = Host(tmp / f"netd-{n}-{secrets.token_hex(2)}", tag=bench_tag())
    tool = NetdTool(host, ports)
    try:
        if ports:  # published ports: only if this netd supports them (the API answers 501 until it does)
            host.boot()
            host.start(env=NETD_ENV)
            host.api.ok("POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": peers.SUBNET}]}})
            host.api.ok("POST", "/v1/netns", {"Name": "e0"})
            status, data = host.api.request("POST", "/v1/networks/bench/connect", tool.body(0))
            host.cleanup()
            if status == 501:
                return {"tool": tool.name, "n": n, "skipped": f"netd answers 501: {data['error']['message']}"}
            host = Host(tmp / f"netd-{n}-{secrets.token_hex(2)}", tag=bench_tag())
            tool = NetdTool(host, ports)
        res = measure(tool, n, budget)
        res["rss_mib_start_note"] = "RSS in MiB of the netd process (VmRSS)"
        return res
    except BaseException:
        print(host.log_text()[-3000:])
        raise
    finally:
        host.cleanup()


def fmt(s: dict[str, Any]) -> str:
    return f"{s['p50']} / {s['p95']} / {s['max']}" if s.get("count") else "-"


def render(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        if "skipped" in r:
            rows.append([r["tool"], str(r["n"]), "skipped: " + r["skipped"], "", "", "", "", ""])
            continue
        a, d, fl = r["attach_ms"], r["detach_ms"], r["attach_first_last"]
        over = [k for k, v in r["over_budget"].items() if v]
        done = f"{a['count']}" + (f" (budget hit: {'+'.join(over)})" if over else "")
        growth = f"{fl['first10']} -> {fl['last10']} (x{fl['ratio']})" if fl["ratio"] is not None else "-"
        extra = ""
        if "rss_mib_attached" in r:
            extra = f"{r['rss_mib_attached']} MiB, {r['cpu_s_attach']}+{r['cpu_s_detach']} s"
        rows.append(
            [
                r["tool"],
                str(r["n"]),
                done,
                fmt(a),
                f"{a.get('total_s', '-')} / {d.get('total_s', '-')}",
                fmt(d),
                growth,
                extra,
            ]
        )
    header = [
        "tool",
        "N",
        "attached",
        "attach p50/p95/max ms",
        "total s att/det",
        "detach p50/p95/max ms",
        "first10 -> last10 ms",
        "netd RSS, CPU att+det",
    ]
    return md_table(rows, header)


def ratios(results: list[dict[str, Any]], n: int) -> dict[str, float]:
    p50 = {
        r["tool"]: r["attach_ms"]["p50"] for r in results if r["n"] == n and r.get("attach_ms", {}).get("count")
    }
    if "netd" not in p50:
        return {}
    return {f"{t}_over_netd": round(v / p50["netd"], 2) for t, v in p50.items() if t != "netd"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50,200,1000")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds per phase (attach, detach) per tool and N")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS))
    ap.add_argument("--replay-networks", type=int, default=50)
    ap.add_argument("--replay-endpoints", type=int, default=1000, help="endpoints in all (spread over networks)")
    ap.add_argument("--replay-budget", type=float, default=120.0, help="seconds to build the state to replay")
    ap.add_argument("--no-replay", action="store_true")
    ap.add_argument("--rev", help="benchmark netd as committed at this git revision (default: working tree)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tools = [t for t in args.tools.split(",") if t]
    info = machine()
    info["versions"] = {p: pkg_version(p) for p in ("containernetworking-plugins", "netavark", "iproute2")}
    results: list[dict[str, Any]] = []
    rep: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="netd-bench-") as d:
        info["netd"] = use_revision(args.rev, Path(d))
        tmp = Path(d)
        for n in sizes:
            for name in tools:
                print(f"-- {name} N={n}", flush=True)
                if name.startswith("netd"):
                    r = run_netd(name == "netd+ports", n, args.budget, tmp)
                else:
                    r = run_peer(name, n, args.budget, tmp)
                results.append(r)
                print(render([r]).splitlines()[-1], flush=True)
                settle()
        out = render(results)
        rat = {str(n): ratios(results, n) for n in sizes}
        if results:
            doc = {"machine": info, "budget_s": args.budget, "results": results, "ratios": rat, "table": out}
            print(f"wrote {write_result('compare', doc)}")
        if not args.no_replay:
            rep = replay.measure(tmp, args.replay_networks, args.replay_endpoints, args.replay_budget)
            print(f"wrote {write_result('replay', {'machine': info, **rep})}")
    print("\n" + out)
    if rep:
        print("\n" + replay.render(rep))
    print("\nattach p50 relative to netd (>1: netd is faster):", rat)
    left = leftovers([PREFIX, replay.PREFIX, "ndt-h-bn", "ndt-o-bn"])
    if left:
        print(f"WARNING: namespaces left behind: {left}")


if __name__ == "__main__":
    main()
