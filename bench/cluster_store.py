"""Cluster control-plane costs against a throw-away etcd (no kernel work): what an overlay connect/create will
pay in etcd round trips, and what cluster mode adds to the daemon's memory.

    .venv/bin/python bench/cluster_store.py [--n 200] [--clients 3]

etcd runs as in the tests (127.0.0.1, free ports, fast raft timings, data in a temp dir, stopped at the end).
Prints one JSON object: per-op p50/p95 (ms) of sequential get / put / create-if-absent / address allocation
(range read + create) and allocation from a cache view (create only), concurrent allocations from several clients
(total and per allocation), watch delay (put -> event), and the RSS cost of importing netd.cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration" / "cluster"))

from etcdfix import etcd_cluster  # noqa: E402

from netd.cluster.ipam import ClusterIpam  # noqa: E402
from netd.cluster.keys import KeyLayout  # noqa: E402
from netd.cluster.records import Allocation, OverlayNetwork, encode  # noqa: E402
from netd.cluster.store import ClusterStore  # noqa: E402
from netd.core.ipam import validate_pool  # noqa: E402

KEYS = KeyLayout("/netd-bench/v1")


def pct(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"p50": round(statistics.median(xs) * 1000, 2), "p95": round(xs[int(len(xs) * 0.95) - 1] * 1000, 2)}


async def timed(n: int, op: object) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)  # type: ignore[operator]
        out.append(time.perf_counter() - t)
    return out


async def run(endpoints: list[str], n: int, clients: int) -> dict[str, object]:
    s = ClusterStore(endpoints)
    res: dict[str, object] = {}
    await s.put("/warm", b"x")
    res["get"] = pct(await timed(n, lambda i: s.get("/warm")))
    res["put"] = pct(await timed(n, lambda i: s.put(f"/b/put/{i}", b"x" * 200)))
    res["create_if_absent"] = pct(await timed(n, lambda i: s.create(f"/b/create/{i}", b"x" * 200)))
    for name, net_id in (("allocate_read_then_create", "n1"), ("allocate_from_cache_view", "n2")):
        net = OverlayNetwork(id=net_id, name=net_id, vni=4096, ipam=[validate_pool("10.1.0.0/16")])
        await s.put(KEYS.network(net_id), encode(net))
        ipam = ClusterIpam(s, KEYS, "bench")
        held: list[Allocation] = []

        async def alloc(
            i: int,
            net: OverlayNetwork = net,
            ipam: ClusterIpam = ipam,
            name: str = name,
            held: list[Allocation] = held,
        ) -> None:
            view = held if name == "allocate_from_cache_view" else None
            addr = await ipam.allocate_address(net, f"ep{i}", held=view)
            held.append(Allocation(network=net.id, address=addr, endpoint=f"ep{i}", node="bench"))

        res[name] = pct(await timed(n, alloc))
    # concurrent allocations from several clients into one network
    stores = [ClusterStore(endpoints, timeout=30) for _ in range(clients)]
    net = OverlayNetwork(id="n3", name="n3", vni=4097, ipam=[validate_pool("10.2.0.0/16")])
    await s.put(KEYS.network("n3"), encode(net))
    ipams = [ClusterIpam(x, KEYS, f"c{i}") for i, x in enumerate(stores)]
    t = time.perf_counter()
    got = await asyncio.gather(*(ipams[i % clients].allocate_address(net, f"ep{i}") for i in range(n)))
    total = time.perf_counter() - t
    res["concurrent_allocations"] = {
        "n": n,
        "clients": clients,
        "unique": len(set(got)) == n,
        "total_s": round(total, 2),
        "per_alloc_ms": round(total / n * 1000, 2),
    }
    # watch delay: put -> event on another client's watch
    delays: list[float] = []
    sent: dict[str, float] = {}
    _, rev = await s.get_prefix("/w/")

    async def watch() -> None:
        async for ev in stores[0].watch("/w/", rev + 1):
            delays.append(time.perf_counter() - sent[ev.key])
            if len(delays) == n:
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    for i in range(n):
        sent[f"/w/{i}"] = time.perf_counter()
        await s.put(f"/w/{i}", b"x")
    await asyncio.wait_for(task, 60)
    res["watch_delay"] = pct(delays)
    for x in (s, *stores):
        await x.close()
    return res


def import_cost() -> dict[str, float]:
    code = (
        "import time,netd.daemon\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])/1024\n"
        "a=rss(); t=time.perf_counter()\n"
        "import netd.cluster.node\n"
        "print(a, rss(), time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, secs = (float(x) for x in out)
    return {
        "rss_single_host_mib": round(before, 1),
        "rss_with_cluster_mib": round(after, 1),
        "added_mib": round(after - before, 1),
        "import_s": round(secs, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--clients", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d, etcd_cluster(Path(d)) as etcd:
        res = asyncio.run(run(etcd.endpoints, a.n, a.clients))
    res["import"] = import_cost()
    res["load"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
