"""Services across nodes: connections per second and connect latency through the routing mesh, through the VIP
and straight to a task, in one run (real netd daemons, real etcd, real traffic).

    sudo .venv/bin/python bench/services_mesh.py [--conns 3000]

Three simulated nodes (``tests/integration/overlay/mhtest.py``): a service ``web`` publishing 8080 -> 7070 through
the routing mesh, tasks t1 on node1 and t2, t3 on node2 (echo servers); node3 has no task.  Paths, interleaved
over 10 rounds with the sequential TCP client of ``bench/lb.py`` (connect, send, read, close):

* ``mesh``: from the underlay's outside namespace to node3's address:8080 (node3 DNATs to a task's ingress
  address on another node and SNATs to its own ingress address; the reply comes back the same way);
* ``mesh_task_node``: the same to node1's address (a node with a task: the spread still crosses to node2 2/3 of
  the time);
* ``vip``: from a namespace on node3 on the service's network to the VIP (DNAT in that namespace);
* ``direct``: from that namespace to t1's overlay address.

The mesh's client is outside the cluster, the others are in an overlay namespace: each path as its users take it.

Writes ``bench/results/services_mesh.json`` with the load average before and after.
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

from mhtest import cluster, until  # noqa: E402
from services_vip import measure  # noqa: E402
from svctest import hits, servers, setup_web  # noqa: E402

PORT = 7070
PUB = 8080


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=3000)
    args = ap.parse_args()
    result: dict[str, object] = {"load": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), 3) as c:
        n1, _n2, n3 = c.nodes
        vip, ips, paths, client = setup_web(c, "-p", f"{PUB}:{PORT}")
        everyone = {"t1", "t2", "t3"}
        with servers(paths, PORT):
            assert until(lambda: set(hits(client, vip, PORT, 12)) == everyone, 30)
            for n in (n1, n3):
                assert until(lambda n=n: set(hits(c.seg_path, n.underlay_ip, PUB, 12)) == everyone, 60)
            targets = {
                "mesh": (c.seg_path, n3.underlay_ip, PUB),
                "mesh_task_node": (c.seg_path, n1.underlay_ip, PUB),
                "vip": (client, vip, PORT),
                "direct": (client, ips["t1"], PORT),
            }
            result["paths"] = measure(targets, args.conns)
    result["load_after"] = os.getloadavg()
    (ROOT / "bench" / "results" / "services_mesh.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
