"""Services' control plane: the cost of adding the Nth task to a service (N = 10 vs 1000), etcd and kernel work.

    sudo .venv/bin/python bench/services.py [--sizes 10,100,1000] [--repeat 9]

A throw-away etcd on 127.0.0.1, one overlay network and one ``vip`` service in it, and one client namespace
whose VIP load balancing netd keeps (``ServiceLb``, as on every node).  For each size N the service is grown to
N-1 tasks, then a task is added and removed ``--repeat`` times; each add is measured in its three steps:

* ``etcd``: what ``network connect --service`` writes (the address allocation and the endpoint record, one
  transaction, with the cache's view of the network's allocations as the connect uses it);
* ``watch``: until this node's watch cache holds the new record;
* ``lb``: one ``ServiceLb.sync`` pass (the desired rules of the namespace built from the cache, then the
  nft delta in the namespace); ``of_which_desired``: the first half alone (pure Python).

Prints medians (ms) with the load average, writes ``bench/results/services.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Interface
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration" / "cluster"))
sys.path.insert(0, str(ROOT))

from etcdfix import etcd_cluster  # noqa: E402

from netd.cluster.cache import ClusterCache  # noqa: E402
from netd.cluster.ipam import ClusterIpam  # noqa: E402
from netd.cluster.keys import KeyLayout  # noqa: E402
from netd.cluster.networks import ClusterNetworks, NetworkDraft  # noqa: E402
from netd.cluster.records import EndpointRecord, ServicePort, encode  # noqa: E402
from netd.cluster.services import ClusterServices, ServiceDraft  # noqa: E402
from netd.cluster.store import ClusterStore  # noqa: E402
from netd.cluster.txn import Delete, Put  # noqa: E402
from netd.core.model import DesiredState, Endpoint, Network  # noqa: E402
from netd.firewall.lb import make_lb_backend  # noqa: E402
from netd.multihost.service_lb import ServiceLb  # noqa: E402

KEYS = KeyLayout("/netd-bench/v1")


def sh(*args: str) -> None:
    import subprocess

    subprocess.run(args, check=True, capture_output=True)


async def bench(endpoints: list[str], ns_path: str, sizes: list[int], repeat: int) -> dict[str, object]:
    store = ClusterStore(endpoints, timeout=5.0)
    cache = ClusterCache(store, KEYS)
    cache.start()
    ipam = ClusterIpam(store, KEYS, "bench")
    net = await ClusterNetworks(store, KEYS, ipam, "bench").create(
        NetworkDraft(id="n1", name="ov1", subnet="10.88.0.0/20")
    )
    await ClusterServices(store, KEYS, ipam, "bench").create(
        ServiceDraft(id="s1", name="web", networks=[net], ports=[ServicePort(target=80)])
    )
    pool = net.ipam[0]
    state = DesiredState(
        networks={"ov1": Network(id="n1", name="ov1", driver="overlay", bridge="", ipam=[pool])},
        endpoints={
            "c": Endpoint(
                id="c", network="n1", netns_path=ns_path, ifname="eth0", host_ifname="x", mac="02:42:0a:58:0f:fe"
            )
        },
    )
    lb = ServiceLb(
        "bench",
        lambda: state,
        lambda ep: ep.netns_path or "",
        lambda: (cache.services(), [r for r in cache.endpoints() if r.service], {"bench", "b"}),
        lambda p: make_lb_backend("nftables", netns=p),
    )
    await cache.wait_for(lambda c: "web" in c.services(), 10)
    count = 0

    async def add(i: int) -> tuple[float, float, float, float, str]:
        ep_id = f"task{i:05d}"
        key = KEYS.endpoint("n1", ep_id)

        def record(a: object) -> list[Put]:
            rec = EndpointRecord(
                id=ep_id,
                network="n1",
                node="b",
                name=ep_id,
                mac="02:42:00:00:00:00",
                ipv4=IPv4Interface(f"{a}/{pool.subnet.prefixlen}"),
                service="web",
            )
            return [Put(key, encode(rec))]

        t0 = time.perf_counter()
        addr = await ipam.allocate_address(net, ep_id, held=cache.allocations("n1"), also=record)
        t1 = time.perf_counter()
        await cache.wait_for(lambda c: key in c.records, 10)
        t2 = time.perf_counter()
        lb.desired()  # the pure part of the pass, alone (sync computes it again)
        t3 = time.perf_counter()
        await lb.sync()
        t4 = time.perf_counter()
        return t1 - t0, t2 - t1, t4 - t3, t3 - t2, str(addr)

    async def remove(i: int, addr: str) -> None:
        ep_id = f"task{i:05d}"
        key = KEYS.endpoint("n1", ep_id)
        await store.txn("rm", [], [Delete(key), Delete(KEYS.address("n1", IPv4Interface(addr).ip))])
        await cache.wait_for(lambda c: key not in c.records, 10)
        await lb.sync()

    out: dict[str, object] = {}
    try:
        for n in sizes:
            while count < n - 1:
                await add(count)
                count += 1
            steps: list[tuple[float, float, float, float]] = []
            for _ in range(repeat):
                e, w, k, d, addr = await add(count)
                steps.append((e, w, k, d))
                await remove(count, addr)
            rs = lb.desired()
            spread = next(iter(next(iter(rs.values())).spreads.values()))
            assert len(spread.endpoints) == n - 1, len(spread.endpoints)
            med = {
                name: round(statistics.median(s[i] for s in steps) * 1000, 2)
                for i, name in enumerate(("etcd_ms", "watch_ms", "lb_ms", "of_which_desired_ms"))
            }
            med["total_ms"] = round(med["etcd_ms"] + med["watch_ms"] + med["lb_ms"], 2)
            out[str(n)] = med
            print(f"task {n:5d}: {med}  load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        await lb.close()
        await cache.stop()
        await store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    ns = f"ndb-svc-{os.getpid()}"
    result: dict[str, object] = {"load": os.getloadavg()}
    sh("ip", "netns", "add", ns)
    try:
        with tempfile.TemporaryDirectory() as tmp, etcd_cluster(Path(tmp), 1) as etcd:
            result["sizes"] = asyncio.run(bench(etcd.endpoints, f"/run/netns/{ns}", sizes, args.repeat))
    finally:
        sh("ip", "netns", "del", ns)
    result["load_after"] = os.getloadavg()
    out = ROOT / "bench" / "results" / "services.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
