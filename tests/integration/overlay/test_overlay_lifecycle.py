"""Overlay nodes that reboot, lose etcd, or go away for good."""

from __future__ import annotations

import json
from pathlib import Path

from mhtest import addr, cluster, until
from netdtest import reach


def _ip_of(node, net: str, ns: str) -> str:  # type: ignore[no-untyped-def]
    for c in node.json("network", "inspect", net)[0]["Containers"].values():
        if c["Name"] == ns:
            return str(c["IPv4Address"]).split("/")[0]
    raise AssertionError(f"{ns} not on {net} on {node.node_name}")


def test_a_rebooted_node_comes_back_with_the_same_addresses(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as c:
        n1, n2 = c.nodes
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.82.0.0/24", "ov")
        assert until(lambda: "ov" in n2.ctl("network", "ls").stdout)
        a = addr(n1.connect("ov", "a", "--alias", "alpha"))
        b = addr(n2.connect("ov", "b"))
        assert reach(n1.ns("a"), b)
        n2.reboot()  # kill -9, the host namespace and everything in it gone
        n2.start()  # on its state directory
        assert _ip_of(n2, "ov", "b") == b
        assert reach(n2.ns("b"), a) and reach(n1.ns("a"), b)
        n1.reboot()
        n1.start()
        assert _ip_of(n1, "ov", "a") == a
        assert reach(n2.ns("b"), a) and reach(n1.ns("a"), b)
        recs = n2.json("node", "ls", "--format", "json")
        assert {(r["Name"], r["State"], r["Endpoints"]) for r in recs} == {
            ("node1", "alive", 1),
            ("node2", "alive", 1),
        }


def test_etcd_down_traffic_goes_on_changes_refused_bridges_work_then_reconverges(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        n1, n2, n3 = c.nodes
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.83.0.0/24", "ov")
        assert until(lambda: all("ov" in n.ctl("network", "ls").stdout for n in c.nodes))
        a, b = addr(n1.connect("ov", "a")), addr(n2.connect("ov", "b"))
        n1.ctl("netns", "create", "late")
        c.etcd.kill(0)
        assert reach(n1.ns("a"), b) and reach(n2.ns("b"), a)  # existing traffic goes on
        before = n1.state_bytes()
        r = n1.ctl("network", "connect", "ov", "late", check=False)
        assert r.returncode != 0 and "cluster store unreachable" in r.stderr, r.stderr
        r = n1.ctl("network", "create", "-d", "overlay", "--attachable", "ov2", check=False)
        assert r.returncode != 0 and "cluster store unreachable" in r.stderr, r.stderr
        r = n2.ctl("network", "disconnect", "ov", "b", check=False)
        assert r.returncode != 0 and "cluster store unreachable" in r.stderr, r.stderr
        assert n1.state_bytes() == before
        st = json.loads(n1.ctl("status", "--format", "json").stdout)
        assert until(lambda: not json.loads(n1.ctl("status", "--format", "json").stdout)["cluster"]["connected"])
        assert "netd_cluster_connected 0.0" in n1.api.text("/metrics")
        # bridge work goes on
        n1.ctl("network", "create", "--subnet", "172.29.5.0/24", "br")
        x = addr(n1.connect("br", "x"))
        y = addr(n1.connect("br", "y"))
        assert reach(n1.ns("x"), y) and x != y
        # etcd back: reconverges without a restart; a new endpoint is reachable from everywhere
        c.etcd.start(0)
        for n in c.nodes:
            assert until(
                lambda n=n: json.loads(n.ctl("status", "--format", "json").stdout)["cluster"]["connected"]
            )
        late = addr(n1.connect("ov", "late"))
        cc = addr(n3.connect("ov", "c"))
        for src, ns in ((n1, "a"), (n2, "b"), (n3, "c")):
            assert reach(src.ns(ns), late), src.node_name
        assert reach(n1.ns("late"), cc)
        assert st["cluster"]["node"] == "node1"


def test_a_node_gone_for_good_is_dropped_and_node_rm_frees_its_addresses(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        n1, n2, n3 = c.nodes
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.84.0.0/24", "ov")
        assert until(lambda: all("ov" in n.ctl("network", "ls").stdout for n in c.nodes))
        n1.connect("ov", "a")
        n2.connect("ov", "b")
        gone = addr(n3.connect("ov", "c"))
        vx = n1.json("network", "inspect", "ov")[0]["VxlanDevice"]
        assert until(lambda: "192.168.77.13" in n1.fdb_dsts(vx) and gone in n1.neigh(vx))
        r = n1.ctl("node", "rm", "node3", check=False)
        assert r.returncode != 0 and "alive" in r.stderr
        n3.stop()  # for good
        for n in (n1, n2):  # after its lease expired, nothing points at it any more
            assert until(lambda n=n: "192.168.77.13" not in n.fdb_dsts(vx) and gone not in n.neigh(vx)), (
                n.fdb_dsts(vx)
            )
        states = {r["Name"]: r["State"] for r in n1.json("node", "ls", "--format", "json")}
        assert states == {"node1": "alive", "node2": "alive", "node3": "down"}
        # its address stays reserved until node rm
        n2.ctl("netns", "create", "d")
        r = n2.ctl("network", "connect", "--ip", gone, "ov", "d", check=False)
        assert r.returncode != 0 and "in use" in r.stderr
        n1.ctl("node", "rm", "node3")
        assert "node3" not in n1.ctl("node", "ls").stdout
        assert addr(n2.connect("ov", "d", "--ip", gone)) == gone
        assert reach(n1.ns("a"), gone)


def test_losing_one_of_three_etcd_members_goes_unnoticed(tmp_path: Path) -> None:
    with cluster(tmp_path, 2, etcd_members=3) as c:
        n1, n2 = c.nodes
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.88.0.0/24", "ov")
        assert until(lambda: "ov" in n2.ctl("network", "ls").stdout)
        a, b = addr(n1.connect("ov", "a")), addr(n2.connect("ov", "b"))
        c.etcd.kill(0)  # the member both nodes talked to first
        assert reach(n1.ns("a"), b)
        cc = addr(n2.connect("ov", "c"))  # changes still work
        assert reach(n1.ns("a"), cc) and reach(n2.ns("c"), a)
        for n in (n1, n2):
            st = json.loads(n.ctl("status", "--format", "json").stdout)["cluster"]
            assert st["connected"] and st["nodes_alive"] == 2
        assert {r["State"] for r in n1.json("node", "ls", "--format", "json")} == {"alive"}
