"""The routing mesh across three simulated nodes (real kernel, real etcd, real traffic from the underlay's
"outside" namespace): a published port answers on every node, the node without a task too, TCP and UDP, also
to namespaces on the node itself; a task that leaves gets no new connection 1 s later; a rebooted node's tasks
are reached again."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from mhtest import PORTECHO, Cluster, cluster, until
from netdtest import in_ns
from svctest import hits, lb_table, servers, start_server, stop_server, timed_hits

PORT = 7070  # the tasks' port
PUB = 8080  # the published one


def mesh_ok(c: Cluster, want: set[str], proto: str = "tcp") -> bool:
    """Every node's underlay address answers PUB, spread over ``want``."""
    return all(set(hits(c.seg_path, n.underlay_ip, PUB, 10, proto)) == want for n in c.nodes)


def setup(c: Cluster) -> dict[str, str]:
    """ov1 and service web publishing PUB (tcp and udp) through the mesh; tasks t1 (node1), t2 (node2);
    node3 has none.  Returns task -> namespace path."""
    n1, n2, _n3 = c.nodes
    n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.79.0.0/24", "ov1")
    n1.ctl("service", "create", "web", "--network", "ov1", "-p", f"{PUB}:{PORT}", "-p", f"{PUB}:{PORT}/udp")
    paths = {}
    for node, task in ((n1, "t1"), (n2, "t2")):
        assert until(lambda node=node: "web" in node.ctl("service", "ls").stdout)
        node.connect("ov1", task, "--service", "web")
        paths[task] = node.ns(task)
    return paths


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_mesh_every_node_udp_removal_reboot(tmp_path: Path, backend: str) -> None:
    with cluster(tmp_path, 3, extra=f'[firewall]\nbackend = "{backend}"\n') as c:
        n1, n2, n3 = c.nodes
        paths = setup(c)
        # the default ingress network, made by the first service that publishes through the mesh
        ing = n3.json("network", "inspect", "ingress")[0]
        assert ing["Ingress"] is True and ing["IPAM"]["Config"][0]["Subnet"] == "10.0.0.0/24"
        # each task joined ingress too (an endpoint there, in its namespace)
        assert until(lambda: len([t for t in n1.json("service", "inspect", "web")[0]["Tasks"]]) == 2)
        with servers(paths, PORT) as procs:
            assert until(lambda: mesh_ok(c, {"t1", "t2"}), 60), lb_table(n3.path)
            assert until(lambda: mesh_ok(c, {"t1", "t2"}, "udp"), 30), lb_table(n3.path)
            # from the node itself: a namespace on the overlay (its way out is docker_gwbridge) and one on a
            # plain bridge network of node3 reach the published port at node3's own address
            n3.connect("ov1", "client")
            n3.ctl("network", "create", "--subnet", "172.31.9.0/24", "br1")
            n3.connect("br1", "plain")
            for ns in ("client", "plain"):
                got = set(hits(n3.ns(ns), n3.underlay_ip, PUB, 10))
                assert got == {"t1", "t2"}, (ns, got, lb_table(n3.path))
            # the rules live in the node's own namespace, not in the tasks'
            assert f"{PUB}" in lb_table(n3.path)
            # the task sees the node's ingress address (SNAT, as Docker's ingress sandbox), not the client's
            mine = n3.json("status", "--format", "json")["cluster"]["routing_mesh"]["ingress_address"]
            assert mine and mine.startswith("10.0.0.")
            answer = in_ns(c.seg_path, sys.executable, PORTECHO, "send", "tcp", n3.underlay_ip, str(PUB)).stdout
            assert answer.split(":")[2] == mine.split("/")[0], answer
            # each task is on ingress in its namespace (node2's only endpoint there)
            assert len(n2.json("network", "inspect", "ingress")[0]["Containers"]) == 1
            # a task leaves while connections go through node3 (no task there): none reaches it 1 s later
            with (tmp_path / "timed").open("w") as f:
                bg = timed_hits(c.seg_path, n3.underlay_ip, PUB, 1_000_000, out=f)
                time.sleep(0.5)
                n2.ctl("network", "disconnect", "ov1", "t2")
                left = time.monotonic()
                time.sleep(3)
                bg.terminate()
                bg.wait(30)
            out = (tmp_path / "timed").read_text()
            rows = [(float(f[0]), f[1]) for f in (line.split() for line in out.splitlines()) if len(f) == 2]
            late = [(t - left, who) for t, who in rows if t > left + 1.0 and who != "t1"]
            assert not late, f"{len(late)} mesh connections not to t1 more than 1 s after t2 left: {late[:5]}"
            last = [(round(t - left, 2), who) for t, who in rows[-5:]]
            assert {who for t, who in rows if t > left + 1.0} == {"t1"}, f"the client stopped too early: {last}"
            # its ingress endpoint left with it
            assert n2.json("network", "inspect", "ingress")[0]["Containers"] == {}
            n2.connect("ov1", "t2", "--service", "web")
            assert until(lambda: mesh_ok(c, {"t1", "t2"}), 60), lb_table(n3.path)
            # reboot of node2 (its task): netd killed, its namespaces gone, netd started again
            stop_server(procs.pop("t2"))
            n2.reboot()
            assert until(lambda: set(hits(c.seg_path, n3.underlay_ip, PUB, 10)) == {"t1"}, 60), lb_table(n3.path)
            n2.start()
            assert until(lambda: Path(paths["t2"]).exists(), 30)
            procs["t2"] = start_server(paths["t2"], "t2", PORT)
            assert until(lambda: mesh_ok(c, {"t1", "t2"}), 90), lb_table(n2.path)
            # a task's namespace removed: the mesh stops sending to it on every node
            n1.ctl("netns", "rm", "t1")
            assert until(lambda: mesh_ok(c, {"t2"}), 60), lb_table(n3.path)
