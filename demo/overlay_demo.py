"""`make demo` (second part): an overlay network across two simulated nodes on one machine.

Two "node" namespaces on one underlay bridge, each running its own netd, and a throw-away etcd on the underlay
(the multi-host test harness, tests/integration/overlay/mhtest.py); nothing touches the machine's own network.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "overlay"))

from mhtest import Node, addr, cluster, until
from netdtest import in_ns, source_seen_outside


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def ctl(node: Node, *args: str) -> str:
    print(f"{node.node_name}$ netd-ctl " + " ".join(args), flush=True)
    out = node.ctl(*args).stdout
    print(out.rstrip(), flush=True)
    return out


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="netd-overlay-demo-") as tmp, cluster(Path(tmp), 2) as c:
        n1, n2 = c.nodes
        step(f"two nodes ({n1.underlay_ip}, {n2.underlay_ip}) and etcd on {c.etcd.endpoints[0]}")
        ctl(n1, "node", "ls")
        step("an overlay network created on node1 exists on node2")
        ctl(n1, "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.0.9.0/24", "demo-ov")
        until(lambda: "demo-ov" in n2.ctl("network", "ls").stdout)
        ctl(n2, "network", "ls")
        step("a namespace on each node")
        ctl(n1, "netns", "create", "web")
        ctl(n2, "netns", "create", "db")
        ctl(n1, "network", "connect", "--alias", "www", "demo-ov", "web")
        db = addr(n2.connect("demo-ov", "db"))
        step("the name db (node2) resolves on node1; web (node1) -> db (node2) over VXLAN")
        print("[web]$ dig @10.0.9.1 +short db")
        print(in_ns(n1.ns("web"), "dig", "@10.0.9.1", "+short", "db", check=False).stdout.strip())
        print(f"[web]$ ping -c 2 {db}")
        r = in_ns(n1.ns("web"), "ping", "-c", "2", "-W", "2", db, check=False)
        print(r.stdout.rstrip())
        step("the way out: web leaves through node1's docker_gwbridge (NAT to node1's address)")
        print(f"outside saw {source_seen_outside(n1, n1.ns('web'))}")
        ctl(n1, "node", "ls")
        ok = r.returncode == 0
        print("\ndemo " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
