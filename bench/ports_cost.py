"""Cost of adding a published port at 10 vs 1000 existing mappings, for each firewall backend (issue 4).

    sudo .venv/bin/python bench/ports_cost.py [--reps 7] [--mappings 10,100,1000]

Runs each backend in a thread that has entered a throw-away network namespace (deleted at the end, even on
failure); the machine's own packet filter is never touched.  The desired state has 10 bridge networks and
endpoints publishing 10 TCP ports each (M mappings in all); "add a port" is what the reconciler does when one
more endpoint publishes one port on a network that already publishes: ``build_ruleset`` of the new state, then
the backend's ``apply``
(median of ``--reps``, each from the M-mapping ruleset).  The build is incremental, as the reconciler's
(``PortMaps``: the new state shares every other endpoint object with the old one); the build from scratch is
reported beside it.  Also reported: the size of the transaction (nft commands / iptables rules), and for
iptables how many applies so far were a delta (issue 14: a port change restores only the changed rules).
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

from netd.core.model import DesiredState, Endpoint, IpamConfig, Network, PortMapping
from netd.core.ruleset import Ruleset
from netd.firewall.base import FirewallBackend
from netd.firewall.iptables_render import render_chains
from netd.firewall.nft_render import render_nft_json
from netd.firewall.portmaps import PortMaps
from netd.firewall.rules import build_ruleset

NS = "ndt-portbench"
NETS = 10
PER_EP = 10


def state(mappings: int) -> DesiredState:
    nets = [
        Network(
            id=f"{i:016x}", name=f"n{i}", bridge=f"nb{i}", ipam=[IpamConfig(subnet=ip_network(f"10.77.{i}.0/24"))]
        )
        for i in range(NETS)
    ]
    eps: dict[str, Endpoint] = {}
    for j in range((mappings + PER_EP - 1) // PER_EP):
        first = 10000 + j * PER_EP
        count = min(PER_EP, mappings - j * PER_EP)
        eid = f"e{j:015x}"
        eps[eid] = Endpoint(
            id=eid,
            network=nets[j % NETS].id,
            netns=f"c{j}",
            ifname="eth0",
            host_ifname=f"v{j}",
            mac="02:00:00:00:00:01",
            ipv4=IPv4Interface(f"10.77.{j % NETS}.{2 + j // NETS}/24"),
            ports=[PortMapping(host_port=first + k, container_port=80 + k) for k in range(count)],
        )
    return DesiredState(networks={n.name: n for n in nets}, endpoints=eps)


def bench_backend(loop: NetnsLoop, backend: FirewallBackend, sizes: list[int], reps: int) -> list[dict[str, Any]]:
    rows = []
    for m in sizes:
        base_state = state(m)
        # one more endpoint publishing one port, on a network that already publishes (the common case); the
        # other endpoints are the same objects (the service's states are copy-on-write)
        plus_state = DesiredState(networks=base_state.networks, endpoints=dict(base_state.endpoints))
        plus_state.endpoints["new"] = Endpoint(
            id="new",
            network=f"{0:016x}",
            netns="new",
            ifname="eth0",
            host_ifname="vnew",
            mac="02:00:00:00:00:02",
            ipv4=IPv4Interface("10.77.0.250/24"),
            ports=[PortMapping(host_port=9999, container_port=80)],
        )
        maps = PortMaps()
        base = build_ruleset(base_state, ports=maps)
        loop.run(backend.apply(base))
        add, build, fresh, sync = [], [], [], []
        for _ in range(reps):
            base = build_ruleset(base_state, ports=maps)
            loop.run(backend.apply(base))
            t0 = time.perf_counter()
            plus: Ruleset = build_ruleset(plus_state, ports=maps)
            t1 = time.perf_counter()
            loop.run(backend.apply(plus))
            t2 = time.perf_counter()
            build.append((t1 - t0) * 1000)
            add.append((t2 - t0) * 1000)
            t0 = time.perf_counter()
            assert build_ruleset(plus_state) == plus
            fresh.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            assert loop.run(backend.in_sync(plus))
            sync.append((time.perf_counter() - t0) * 1000)
        rows.append(
            {
                "mappings": m,
                "add_port_ms": med(add),
                "build_ruleset_ms": med(build),
                "build_from_scratch_ms": med(fresh),
                "in_sync_ms": med(sync),
                "size": _size(plus),
                "deltas": getattr(backend, "deltas", "-"),  # iptables: applies that were a delta (no save)
            }
        )
    loop.run(backend.remove_all())
    return rows


def _size(rs: Ruleset) -> dict[str, int]:
    nft = len(render_nft_json(rs)["nftables"])
    ipt = sum(len(rules) for chains in render_chains(rs, "ipv4").tables.values() for _, rules in chains)
    return {"nft_full_commands": nft, "iptables_v4_rules": ipt}  # an nft port change sends a 4-command delta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--mappings", default="10,100,1000")
    args = ap.parse_args()
    sizes = [int(x) for x in args.mappings.split(",")]
    results: dict[str, Any] = {"machine": machine(), "iptables": pkg_version("iptables")}
    labels = ("nftables", "iptables-nft", "iptables-legacy")
    results["backends"] = each_backend(NS, labels, lambda lp, b: bench_backend(lp, b, sizes, args.reps))
    rows = [
        [
            label,
            str(r["mappings"]),
            str(r["add_port_ms"]),
            str(r["build_ruleset_ms"]),
            str(r.get("build_from_scratch_ms", "-")),
            str(r.get("in_sync_ms", "-")),
            str(r.get("deltas", "-")),
            str(r["size"]),
        ]
        for label, rs in results["backends"].items()
        for r in rs
    ]
    hdr = [
        "backend",
        "mappings",
        "add a port ms",
        "of which build ms",
        "build from scratch ms",
        "in_sync ms",
        "deltas",
    ]
    print(table(rows, [*hdr, "transaction size"]))
    print(f"\nwritten: {write_result('ports_cost', results)}")


if __name__ == "__main__":
    main()
