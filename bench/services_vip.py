"""Services across nodes: connections per second and connect latency through a service's VIP from a client on a
node without a task, against connecting to a task's address directly, in one run (real netd daemons, real etcd).

    sudo .venv/bin/python bench/services_vip.py [--conns 3000]

Three simulated nodes (the overlay tests' harness, ``tests/integration/overlay/mhtest.py``): a service ``web`` with
tasks t1 on node1 and t2, t3 on node2, each an echo server; a client namespace on node3 on the same overlay
network.  The client makes sequential TCP connections (connect, send, read, close), the same client as
``bench/lb.py``, interleaving the paths over 10 rounds.  ``vip``: to the VIP (DNAT in the client's namespace,
spread over the three tasks on two other nodes); ``direct``: to t1's address.  Writes
``bench/results/services_vip.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "overlay"))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "services"))
sys.path.insert(0, str(ROOT / "bench"))

from lb import CLIENT  # noqa: E402
from mhtest import cluster, until  # noqa: E402
from netdtest import in_ns  # noqa: E402
from svctest import hits, servers, setup_web  # noqa: E402

PORT = 7070


def measure(targets: dict[str, tuple[str, str, int]], n: int, rounds: int = 10) -> dict[str, object]:
    """name -> (namespace path of the client, address, port); the paths interleaved over ``rounds``."""
    import statistics

    acc: dict[str, dict[str, list[float] | float]] = {k: {"lat": [], "wall": 0.0, "fails": 0.0} for k in targets}
    for _ in range(rounds):
        for name, (path, ip, port) in targets.items():
            r = json.loads(
                in_ns(path, sys.executable, "-c", CLIENT, ip, str(port), str(n // rounds), timeout=600).stdout
            )
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=3000)
    args = ap.parse_args()
    result: dict[str, object] = {"load": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), 3) as c:
        vip, ips, paths, client = setup_web(c, "-p", str(PORT))
        with servers(paths, PORT):
            assert until(lambda: set(hits(client, vip, PORT, 12)) == {"t1", "t2", "t3"}, 30)
            result["paths"] = measure(
                {"vip": (client, vip, PORT), "direct": (client, ips["t1"], PORT)}, args.conns
            )
    result["load_after"] = os.getloadavg()
    (ROOT / "bench" / "results" / "services_vip.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
