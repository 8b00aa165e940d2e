"""docker_gwbridge: each overlay endpoint leaves through its own node's bridge and NAT (unless --internal)."""

from __future__ import annotations

from pathlib import Path

from mhtest import addr, cluster, until
from netdtest import in_ns, ping, reach, source_seen_outside


def test_each_endpoint_leaves_through_its_own_nodes_gwbridge(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as c:
        n1, n2 = c.nodes
        # node 2: the recipe Docker users follow to customise docker_gwbridge, used as made
        n2.ctl(
            "network",
            "create",
            "--subnet",
            "10.11.0.0/16",
            "-o",
            "com.docker.network.bridge.name=docker_gwbridge",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=true",
            "docker_gwbridge",
        )
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.80.0.0/24", "ov")
        n1.ctl(
            "network", "create", "-d", "overlay", "--attachable", "--internal", "--subnet", "10.81.0.0/24", "iv"
        )
        assert until(lambda: "iv" in n2.ctl("network", "ls").stdout)
        e1, e2 = n1.connect("ov", "a"), n2.connect("ov", "b")
        assert reach(n1.ns("a"), addr(e2))
        for node, ns, ep in ((n1, "a", e1), (n2, "b", e2)):
            routes = in_ns(node.ns(ns), "ip", "-4", "route").stdout
            assert "default via" in routes and "dev eth1" in routes.split("default")[1].splitlines()[0]
            assert "eth0" not in routes.split("default")[1].splitlines()[0]
            assert ep["Gateway"] == ""
            # the outside sees this node's underlay address: NAT on this node's docker_gwbridge
            assert source_seen_outside(node, node.ns(ns)) == node.underlay_ip
        gw1 = n1.json("network", "inspect", "docker_gwbridge")[0]
        gw2 = n2.json("network", "inspect", "docker_gwbridge")[0]
        assert gw1["Bridge"] == gw2["Bridge"] == "docker_gwbridge"
        assert gw1["Options"]["com.docker.network.bridge.enable_icc"] == "false"
        assert gw2["IPAM"]["Config"][0]["Subnet"] == "10.11.0.0/16"  # the user's, untouched
        assert len(gw1["Containers"]) == 1 and len(gw2["Containers"]) == 1
        # --internal: no eth1, no default route, no way out
        n1.connect("iv", "x")
        n2.connect("iv", "y")
        assert "default" not in in_ns(n1.ns("x"), "ip", "route").stdout
        assert not ping(n1.ns("x"), "192.168.77.1")
        assert source_seen_outside(n1, n1.ns("x")) is None
        # disconnecting the overlay endpoint takes its way out with it
        n1.ctl("network", "disconnect", "ov", "a")
        assert n1.json("network", "inspect", "docker_gwbridge")[0]["Containers"] == {}
        assert in_ns(n1.ns("a"), "ip", "-o", "link").stdout.count("eth") == 0
