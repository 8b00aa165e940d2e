"""Overlay networks across three simulated nodes and one etcd: real kernel, real etcd, real traffic."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mhtest import Cluster, addr, cluster, echo_server, tcp, until
from netdtest import in_ns, ping, reach, running_host


def dig(path: str, server: str, name: str) -> list[str]:
    r = in_ns(path, "dig", f"@{server}", "+time=3", "+tries=1", "+short", name, check=False)
    return [x for x in r.stdout.split() if re.match(r"^\d+\.\d+\.\d+\.\d+$", x)]


def count_vxlan_on_underlay(c: Cluster) -> None:
    """Count, on the underlay bridge, UDP 4789 between every pair of node addresses (nft counters)."""
    rules = ["add table bridge ndtvx", "add chain bridge ndtvx vxcount { type filter hook forward priority 0; }"]
    for a in c.nodes:
        for b in c.nodes:
            if a is not b:
                rules.append(
                    f"add rule bridge ndtvx vxcount ip saddr {a.underlay_ip} ip daddr {b.underlay_ip} "
                    f'udp dport 4789 counter comment "{a.underlay_ip}>{b.underlay_ip}"'
                )
    for r in rules:
        in_ns(c.seg_path, "nft", r)


def vxlan_counts(c: Cluster) -> dict[str, int]:
    out = in_ns(c.seg_path, "nft", "list", "table", "bridge", "ndtvx").stdout
    return {
        m.group(2): int(m.group(1)) for m in re.finditer(r'counter packets (\d+) bytes \d+ comment "([^"]+)"', out)
    }


def test_overlay_across_three_nodes(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        n1 = c.nodes[0]
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.77.0.0/24", "ov1")
        for n in c.nodes:  # the definition is on every node, with Docker's fields
            assert until(lambda n=n: "ov1" in n.ctl("network", "ls").stdout)
            view = n.json("network", "inspect", "ov1")[0]
            assert (view["Scope"], view["Driver"], view["Attachable"]) == ("swarm", "overlay", True)
        eps = [n.connect("ov1", f"c{n.index}", "--alias", f"alias{n.index}") for n in c.nodes]
        ips = [addr(e) for e in eps]
        assert len(set(ips)) == 3
        for e in eps:  # the MAC is Docker's: 02:42 + the IPv4 address
            assert e["MacAddress"] == "02:42:" + ":".join(f"{int(b):02x}" for b in addr(e).split("."))
        count_vxlan_on_underlay(c)
        for i, src in enumerate(c.nodes):
            for j, dst in enumerate(c.nodes):
                if i != j:
                    assert reach(src.ns(f"c{src.index}"), ips[j]), f"{src.node_name} -> {dst.node_name}"
        # the traffic crossed the underlay as VXLAN: UDP to port 4789 between every pair of underlay addresses
        counts = vxlan_counts(c)
        assert len(counts) == 6 and all(v > 0 for v in counts.values()), counts
        vx = n1.json("network", "inspect", "ov1")[0]["VxlanDevice"]
        link = in_ns(n1.path, "ip", "-d", "link", "show", vx).stdout
        assert (
            "dstport 4789" in link and "nolearning" in link and "proxy" in link and "local 192.168.77.11" in link
        )
        assert n1.fdb_dsts(vx) == {"192.168.77.12", "192.168.77.13"}
        # TCP between every pair
        for j, dst in enumerate(c.nodes):
            with echo_server(dst.ns(f"c{dst.index}")):
                for src in c.nodes:
                    if src is not dst:
                        assert tcp(src.ns(f"c{src.index}"), ips[j]), f"tcp {src.node_name} -> {dst.node_name}"
        # names and aliases of endpoints on every node answer on every node (the gateway's resolver)
        gw = "10.77.0.1"
        for src in c.nodes:
            for j, dst in enumerate(c.nodes):
                assert dig(src.ns(f"c{src.index}"), gw, f"c{dst.index}") == [ips[j]]
                assert dig(src.ns(f"c{src.index}"), gw, f"alias{dst.index}") == [ips[j]]
        # nodes, status, metrics
        nodes = n1.json("node", "ls", "--format", "json")
        assert {(x["Name"], x["Address"], x["State"], x["Endpoints"]) for x in nodes} == {
            (f"node{i}", f"192.168.77.{10 + i}", "alive", 1) for i in (1, 2, 3)
        }
        assert "ENDPOINTS" in n1.ctl("node", "ls").stdout
        assert n1.json("node", "inspect", "node2")[0]["Address"] == "192.168.77.12"
        st = n1.json("status", "--format", "json")["cluster"]
        assert st["connected"] and st["node"] == "node1" and st["remote_endpoints_programmed"] == 2
        metrics = n1.api.text("/metrics")
        assert "netd_cluster_connected 1.0" in metrics
        assert 'netd_cluster_nodes{state="alive"} 3.0' in metrics
        assert "netd_cluster_remote_endpoints 2.0" in metrics
        assert "netd_cluster_event_to_kernel_seconds_count" in metrics
        # rm is refused while any node has an endpoint on it, from any node
        r = c.nodes[2].ctl("network", "rm", "ov1", check=False)
        assert r.returncode != 0 and "endpoint" in r.stderr
        for n in c.nodes:
            n.ctl("network", "disconnect", "ov1", f"c{n.index}")
        assert until(
            lambda: (
                not n1.fdb_dsts(vx)
                and n1.json("status", "--format", "json")["cluster"]["remote_endpoints_programmed"] == 0
            )
        )
        c.nodes[2].ctl("network", "rm", "ov1")
        for n in c.nodes:
            assert until(lambda n=n: "ov1" not in n.ctl("network", "ls").stdout)
            assert vx not in in_ns(n.path, "ip", "link").stdout


def test_two_overlays_are_isolated_and_go_nowhere_else(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as c:
        n1, n2 = c.nodes
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.78.0.0/24", "red")
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.79.0.0/24", "blue")
        n2.ctl("network", "create", "--subnet", "172.31.9.0/24", "local")
        assert until(lambda: "blue" in n2.ctl("network", "ls").stdout)
        red1, red2 = n1.connect("red", "r1"), n2.connect("red", "r2")
        blue2 = n2.connect("blue", "b2")
        loc = n2.connect("local", "l2")
        assert reach(n1.ns("r1"), addr(red2))
        assert not ping(n1.ns("r1"), addr(blue2))  # another overlay: another VNI, no route
        # r2's eth0 carries no route out; even with one via its overlay gateway the firewall drops
        # what an overlay bridge would forward anywhere else
        in_ns(n2.ns("r2"), "ip", "route", "add", "172.31.9.0/24", "via", "10.78.0.1")
        assert not ping(n2.ns("r2"), addr(loc))
        assert "via 10.78.0.1" not in in_ns(n1.ns("r1"), "ip", "route").stdout  # eth0: no route via the overlay
        assert addr(red1) != addr(red2)


def test_overlay_without_cluster_is_refused(tmp_path: Path) -> None:
    with running_host(tmp_path) as h:
        r = h.ctl("network", "create", "-d", "overlay", "ov", check=False)
        assert r.returncode != 0 and "[cluster]" in r.stderr and "etcd_endpoints" in r.stderr
        assert "ov" not in h.ctl("network", "ls").stdout
        r = h.ctl("node", "ls", check=False)
        assert r.returncode != 0 and "[cluster]" in r.stderr
        # the single-host daemon never loaded the cluster code
        pid = h.proc.pid if h.proc is not None else 0
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "grpc" not in maps and "aetcd" not in maps
        assert sys.executable


def test_overlay_drift_is_repaired(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as c:
        n1, n2 = c.nodes
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.89.0.0/24", "ov")
        assert until(lambda: "ov" in n2.ctl("network", "ls").stdout)
        a, b = addr(n1.connect("ov", "a")), addr(n2.connect("ov", "b"))
        vx = n1.json("network", "inspect", "ov")[0]["VxlanDevice"]
        assert until(lambda: b in n1.neigh(vx))
        mac = "02:42:" + ":".join(f"{int(x):02x}" for x in b.split("."))
        in_ns(n1.path, "bridge", "fdb", "del", mac, "dev", vx, "dst", "192.168.77.12")
        in_ns(n1.path, "ip", "neigh", "del", b, "dev", vx)
        assert "+1/-0 fdb, +1/-0 neighbour" in n1.ctl("plan").stdout
        n1.ctl("reconcile")
        assert n1.fdb_dsts(vx) == {"192.168.77.12"} and b in n1.neigh(vx)
        in_ns(n1.path, "ip", "link", "del", vx)  # the device itself: made again, with its entries
        n1.ctl("reconcile")
        assert n1.fdb_dsts(vx) == {"192.168.77.12"} and b in n1.neigh(vx)
        assert reach(n1.ns("a"), b) and reach(n2.ns("b"), a)
        assert n1.ctl("check", check=False).returncode == 0


def test_dual_stack_overlay_with_its_own_mtu(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as c:
        n1, n2 = c.nodes
        n1.ctl(
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "--ipv6",
            "--subnet",
            "10.91.0.0/24",
            "--subnet",
            "fd00:91::/64",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "ds",
        )
        assert until(lambda: "ds" in n2.ctl("network", "ls").stdout)
        e1, e2 = n1.connect("ds", "a"), n2.connect("ds", "b")
        b6 = str(e2["IPv6Address"]).split("/")[0]
        assert b6.startswith("fd00:91::") and e1["IPv6Address"] != e2["IPv6Address"]
        assert reach(n1.ns("a"), addr(e2)) and reach(n1.ns("a"), b6)
        vx = n1.json("network", "inspect", "ds")[0]["VxlanDevice"]
        assert "mtu 1400" in in_ns(n1.path, "ip", "link", "show", vx).stdout
        assert "mtu 1400" in in_ns(n1.ns("a"), "ip", "link", "show", "eth0").stdout
        v6 = in_ns(n1.path, "ip", "-6", "neigh", "show", "dev", vx).stdout
        assert b6 in v6 and "PERMANENT" in v6
        assert dig(n1.ns("a"), "10.91.0.1", "b") == [addr(e2)]
