"""Overlay networks (issue 15): convergence, connect latency against a bridge, daemon RSS in cluster mode.

    sudo .venv/bin/python bench/overlay_converge.py [--nodes 2,5] [--endpoints 100] [--samples 20]

Simulated nodes (tests/integration/overlay/mhtest.py: namespaces on one underlay bridge, each with its own
netd, a throw-away etcd on the underlay).  Per run: an overlay network, ``--endpoints`` endpoints connected
round-robin over the nodes through the API, then ``--samples`` measured ones:

- convergence: node B pings the address the new endpoint on node A will get (``--ip``, a fresh address), one
  echo every 5 ms, started before the connect; the time from the connect's answer on A to B's first reply
  (``ping -D`` timestamps);
- connect latency: the overlay connects' API time (etcd allocation + record + local apply) against bridge
  connects on the same node in the same run;
- RSS: every netd's VmRSS idle (after start) and after the endpoints; a single-host netd's for comparison.

Results go to bench/results/overlay_converge.json.  Not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "overlay"))

from mhtest import Node, cluster, until  # noqa: E402
from netdtest import running_host  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def connect(node: Node, net: str, ns: str, ip: str | None = None) -> float:
    body: dict[str, Any] = {"Netns": ns}
    if ip:
        body["EndpointConfig"] = {"IPAMConfig": {"IPv4Address": ip}}
    t0 = time.perf_counter()
    node.api.ok("POST", f"/v1/networks/{net}/connect", body)
    return time.perf_counter() - t0


def run(tmp: Path, n_nodes: int, n_endpoints: int, samples: int) -> dict[str, Any]:
    with cluster(tmp, n_nodes) as c:
        nodes = c.nodes
        idle = {n.node_name: rss_kib(n.proc.pid) for n in nodes if n.proc}
        nodes[0].ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.90.0.0/20", "ov")
        for n in nodes:  # a local bridge network on every node, for the connect comparison
            n.ctl("network", "create", "--subnet", "172.28.0.0/20", "br")
        assert until(lambda: all("ov" in n.ctl("network", "ls").stdout for n in nodes))
        for i in range(n_endpoints + samples):
            node = nodes[i % n_nodes]
            node.api.ok("POST", "/v1/netns", {"Name": f"e{i}"})
        t_fill = time.perf_counter()
        for i in range(n_endpoints):
            connect(nodes[i % n_nodes], "ov", f"e{i}")
        fill_s = time.perf_counter() - t_fill
        # the pinger on B: an endpoint that exists already
        converge: list[float] = []
        overlay_ms: list[float] = []
        bridge_ms: list[float] = []
        for k in range(samples):
            a = nodes[k % n_nodes]
            b = nodes[(k + 1) % n_nodes]
            src = f"e{(k + 1) % n_nodes}"  # an endpoint of the fill on node b
            ns = f"e{n_endpoints + k}"
            ip = f"10.90.{8 + k // 250}.{1 + k % 250}"
            # the client asks ARP again every 5 ms (instead of every second): the wait measured is the control
            # plane's, not the client's neighbour retry timer
            subprocess.run(
                [
                    "nsenter",
                    f"--net={b.ns(src)}",
                    "sysctl",
                    "-qw",
                    "net.ipv4.neigh.eth0.retrans_time_ms=5",
                    "net.ipv4.neigh.eth0.mcast_solicit=200",
                    "net.ipv4.neigh.eth0.ucast_solicit=200",
                ],
                check=True,
            )
            pinger = subprocess.Popen(
                ["nsenter", f"--net={b.ns(src)}", "ping", "-D", "-n", "-c", "1", "-w", "10", "-i", "0.005", ip],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            overlay_ms.append(connect(a, "ov", ns, ip) * 1000)
            t_answer = time.time()
            out, _ = pinger.communicate(timeout=15)
            m = re.search(r"\[(\d+\.\d+)\] \d+ bytes from", out)
            if m:
                converge.append(float(m.group(1)) - t_answer)
            a.api.ok("POST", "/v1/netns", {"Name": f"b{k}"})
            bridge_ms.append(connect(a, "br", f"b{k}") * 1000)
        loaded = {n.node_name: rss_kib(n.proc.pid) for n in nodes if n.proc}
        return {
            "nodes": n_nodes,
            "endpoints": n_endpoints,
            "samples": samples,
            "fill_seconds": round(fill_s, 2),
            "converge_ms": {
                "p50": pct(converge, 50) * 1000,
                "p95": pct(converge, 95) * 1000,
                "max": max(converge) * 1000 if converge else None,
                "n": len(converge),
            },
            "overlay_connect_ms": {"p50": pct(overlay_ms, 50), "p95": pct(overlay_ms, 95)},
            "bridge_connect_ms": {"p50": pct(bridge_ms, 50), "p95": pct(bridge_ms, 95)},
            "overlay_over_bridge_p50": statistics.median(overlay_ms) / statistics.median(bridge_ms),
            "rss_kib_idle": idle,
            "rss_kib_loaded": loaded,
        }


def single_host_rss(tmp: Path) -> int:
    with running_host(tmp) as h:
        assert h.proc is not None
        return rss_kib(h.proc.pid)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="2,5")
    ap.add_argument("--endpoints", type=int, default=100)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    results: dict[str, Any] = {"runs": []}
    with tempfile.TemporaryDirectory(prefix="netd-bench-ov-") as tmp:
        results["single_host_rss_kib"] = single_host_rss(Path(tmp) / "single")
        for n in (int(x) for x in args.nodes.split(",")):
            r = run(Path(tmp) / f"n{n}", n, args.endpoints, args.samples)
            print(json.dumps(r, indent=1), flush=True)
            results["runs"].append(r)
    out = ROOT / "bench" / "results" / "overlay_converge.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"single-host netd RSS: {results['single_host_rss_kib']} KiB; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
