"""Firewall cost per network and per endpoint, for both backends (nftables, iptables-nft, iptables-legacy).

    sudo .venv/bin/python bench/firewall_cost.py [--reps 5] [--networks 1,10,100,1000]

Runs each backend in a thread that has entered a throw-away network namespace (deleted at the end, even on
failure); the machine's own packet filter is never touched.  Measures, per backend:

* ``apply`` of the whole ruleset with N networks, and adding the (N+1)th network to it (what the reconciler
  does when a network is created): median of ``--reps`` runs;
* ``in_sync`` (the 1 s flush check) at N networks;
* per endpoint: the reconciler rebuilds the ruleset and applies it only when it changed.  netd has no
  per-endpoint rules, so the cost of the 10th and the 1000th endpoint is ``build_ruleset`` + a comparison,
  and no firewall transaction at all; both are measured with 10 networks and 10 / 1000 endpoints.
"""

from __future__ import annotations

import argparse
import sys
import time
from ipaddress import IPv4Interface, ip_network
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "firewall"))
from common import machine, pkg_version, table, write_result
from fwbench import each_backend, med
from fwtopo import NetnsLoop

from netd.core.model import DesiredState, Endpoint, IpamConfig, Network
from netd.firewall.base import FirewallBackend
from netd.firewall.rules import build_ruleset

NS = "ndt-fwbench"


def state(networks: int, endpoints: int = 0) -> DesiredState:
    nets = [
        Network(
            id=f"{i:016x}",
            name=f"n{i}",
            bridge=f"nb{i}",
            ipam=[IpamConfig(subnet=ip_network(f"10.{100 + i // 256}.{i % 256}.0/24"))],
        )
        for i in range(networks)
    ]
    eps = {}
    for j in range(endpoints):
        net = nets[j % len(nets)]
        i = int(net.id, 16)
        eid = f"e{j:015x}"
        eps[eid] = Endpoint(
            id=eid,
            network=net.id,
            netns=f"c{j}",
            ifname="eth0",
            host_ifname=f"v{j}",
            mac="02:00:00:00:00:01",
            ipv4=IPv4Interface(f"10.{100 + i // 256}.{i % 256}.{2 + j // len(nets)}/24"),
        )
    return DesiredState(networks={n.name: n for n in nets}, endpoints=eps)


def timed(loop: NetnsLoop, coro_fn: Any, reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        loop.run(coro_fn())
        out.append((time.perf_counter() - t0) * 1000)
    return med(out)


def bench_backend(loop: NetnsLoop, backend: FirewallBackend, sizes: list[int], reps: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        base, plus = build_ruleset(state(n)), build_ruleset(state(n + 1))
        loop.run(backend.apply(base))
        apply_ms = timed(loop, lambda b=base: backend.apply(b), reps)  # type: ignore[misc]
        add = []
        for _ in range(reps):
            loop.run(backend.apply(base))
            t0 = time.perf_counter()
            loop.run(backend.apply(plus))
            add.append((time.perf_counter() - t0) * 1000)
        loop.run(backend.apply(base))
        sync_ms = timed(loop, lambda b=base: backend.in_sync(b), reps)  # type: ignore[misc]
        assert loop.run(backend.in_sync(base))
        rows.append({"networks": n, "apply_ms": apply_ms, "add_network_ms": med(add), "in_sync_ms": sync_ms})
    loop.run(backend.remove_all())
    return rows


def per_endpoint(reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rulesets = {}
    for eps in (10, 1000):
        st = state(10, eps)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            rs = build_ruleset(st)
            _changed = rs != rulesets.get(10)
            ts.append((time.perf_counter() - t0) * 1000)
        rulesets[eps] = build_ruleset(st)
        out[f"build_and_compare_ms_at_{eps}_endpoints"] = med(ts)
    out["ruleset_identical_10_vs_1000_endpoints"] = rulesets[10] == rulesets[1000]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--networks", default="1,10,100,1000")
    args = ap.parse_args()
    sizes = [int(x) for x in args.networks.split(",")]
    results: dict[str, Any] = {"machine": machine(), "iptables": pkg_version("iptables")}
    labels = ("nftables", "iptables-nft", "iptables-legacy")
    results["backends"] = each_backend(NS, labels, lambda lp, b: bench_backend(lp, b, sizes, args.reps))
    results["per_endpoint"] = per_endpoint(args.reps)
    rows = [
        [label, str(r["networks"]), str(r["apply_ms"]), str(r["add_network_ms"]), str(r["in_sync_ms"])]
        for label, rs in results["backends"].items()
        for r in rs
    ]
    print(table(rows, ["backend", "networks", "apply ms", "add a network ms", "in_sync ms"]))
    print()
    for k, v in results["per_endpoint"].items():
        print(f"{k}: {v}")
    print(f"\nwritten: {write_result('firewall_cost', results)}")


if __name__ == "__main__":
    main()
