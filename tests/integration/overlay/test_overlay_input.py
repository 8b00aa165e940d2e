"""Bad input on overlay networks: a clear error and no change; concurrent connects never share an address."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mhtest import Node, addr, cluster, until


def _refused(node: Node, *args: str) -> str:
    r = node.ctl(*args, check=False)
    assert r.returncode != 0, f"{args} was accepted: {r.stdout}"
    return r.stderr


def test_bad_overlay_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as c:
        n1, n2 = c.nodes
        n1.ctl(
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.85.0.0/24",
            "-o",
            "com.docker.network.driver.overlay.vxlanid_list=5000",
            "plain",
        )
        assert until(lambda: "plain" in n2.ctl("network", "ls").stdout)
        ls1, ls2 = n1.ctl("network", "ls").stdout, n2.ctl("network", "ls").stdout
        err = _refused(n1, "network", "create", "-d", "overlay", "-o", "foo=bar", "x1")
        assert "unknown option 'foo'" in err and "vxlanid_list" in err
        for vni in ("0", "16777216", "abc", "1,2"):
            err = _refused(
                n1,
                "network",
                "create",
                "-d",
                "overlay",
                "-o",
                f"com.docker.network.driver.overlay.vxlanid_list={vni}",
                "x2",
            )
            assert "vxlanid_list" in err, err
        err = _refused(
            n2,
            "network",
            "create",
            "-d",
            "overlay",
            "-o",
            "com.docker.network.driver.overlay.vxlanid_list=5000",
            "x3",
        )
        assert "VNI 5000 is already used" in err
        err = _refused(n2, "network", "create", "-d", "overlay", "--subnet", "10.85.0.0/16", "x4")
        assert "overlaps" in err and "10.85.0.0/16" in err
        err = _refused(n2, "network", "create", "-d", "overlay", "plain")
        assert "already exists" in err
        n2.ctl("netns", "create", "w")
        err = _refused(n2, "network", "connect", "plain", "w")
        assert "not attachable" in err and "--attachable" in err
        assert (n1.ctl("network", "ls").stdout, n2.ctl("network", "ls").stdout) == (ls1, ls2)
        assert n2.json("netns", "ls", "--format", "json")[0]["Endpoints"] == []
        # the refused creates left nothing in etcd: the VNI and subnets are free for the next one
        n2.ctl(
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.86.0.0/24",
            "-o",
            "com.docker.network.driver.overlay.vxlanid_list=5001",
            "ok",
        )
        assert n1.json("network", "inspect", "plain")[0]["VNI"] == 5000


def test_unreachable_etcd_at_start_is_a_clear_error(tmp_path: Path) -> None:
    with cluster(tmp_path, 1) as c:
        node = Node(tmp_path, c.seg, 9, ["http://192.168.77.1:1"])
        c.nodes.append(node)
        node.boot()
        node.start(wait=False)
        assert node.proc is not None
        rc = node.proc.wait(30)
        assert rc != 0
        assert "cluster store unreachable" in node.log_text()
        assert (
            not (node.state_dir / "state.json").exists()
            or "overlay" not in (node.state_dir / "state.json").read_text()
        )


def test_sixty_concurrent_connects_over_three_nodes_get_distinct_addresses(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        c.nodes[0].ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.87.0.0/24", "ov")
        assert until(lambda: all("ov" in n.ctl("network", "ls").stdout for n in c.nodes))
        jobs = [(n, f"c{n.index}-{i}") for n in c.nodes for i in range(20)]
        for n, ns in jobs:
            n.ctl("netns", "create", ns)
        with ThreadPoolExecutor(30) as pool:
            eps = list(
                pool.map(lambda job: json.loads(job[0].ctl("network", "connect", "ov", job[1]).stdout), jobs)
            )
        ips = [addr(e) for e in eps]
        assert len(ips) == 60 and len(set(ips)) == 60
        macs = [e["MacAddress"] for e in eps]
        assert len(set(macs)) == 60
        seen = set()
        for n in c.nodes:  # every node agrees: 60 endpoints, each address once
            for rec in n.json("node", "ls", "--format", "json"):
                assert rec["Endpoints"] == 20
            seen |= {addr(x) for x in n.json("network", "inspect", "ov")[0]["Containers"].values()}
        assert seen == set(ips)
