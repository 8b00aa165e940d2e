"""Services in the cluster through netd-ctl on three simulated nodes (real etcd): created on one node, seen
on all; tasks on several nodes; bad input refused with the field named and nothing changed."""

from __future__ import annotations

from pathlib import Path

from mhtest import Cluster, Node, addr, cluster, until
from netdtest import in_ns


def etcd_dump(c: Cluster) -> list[str]:
    """Every key and value in etcd, read back with etcdctl (in the underlay namespace, where etcd listens)."""
    r = in_ns(c.seg_path, "etcdctl", f"--endpoints={','.join(c.etcd.endpoints)}", "get", "--prefix", "/netd/")
    return r.stdout.splitlines()


def snapshot(c: Cluster) -> list[str]:
    """etcd, minus what changes by itself (nodes' last_seen, leases), and every node's kernel."""
    keep = [x for x in etcd_dump(c) if "last_seen" not in x and '"lease"' not in x]
    return keep + [n.kernel_snapshot() for n in c.nodes]


def refused(n: Node, *args: str) -> str:
    r = n.ctl(*args, check=False)
    assert r.returncode != 0, f"netd-ctl {' '.join(args)} was accepted: {r.stdout}"
    return r.stderr


def test_services_across_nodes(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        n1, n2, n3 = c.nodes
        n1.ctl("network", "create", "-d", "overlay", "--subnet", "10.78.0.0/24", "ov1")  # not attachable
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.78.1.0/24", "ov2")
        n1.ctl("network", "create", "--subnet", "172.31.9.0/24", "br1")
        n2.ctl(
            "service",
            "create",
            "web",
            "--network",
            "ov1",
            "-p",
            "8080:80",
            "-p",
            "mode=host,published=8081,target=81/udp".replace("/udp", ",protocol=udp"),
        )
        n3.ctl("service", "create", "rr", "--network", "ov1", "--network", "ov2", "--endpoint-mode", "dnsrr")
        for n in c.nodes:  # created on one node, seen on all
            assert until(
                lambda n=n: (
                    {s["Spec"]["Name"] for s in n.json("service", "ls", "--format", "json")} == {"web", "rr"}
                )
            )
        web = n1.json("service", "inspect", "web")[0]
        net_id = n1.json("network", "inspect", "ov1")[0]["Id"]
        assert web["Spec"]["EndpointSpec"]["Mode"] == "vip"
        assert web["Endpoint"]["VirtualIPs"] == [{"NetworkID": net_id, "Addr": "10.78.0.2/24"}]
        assert web["Endpoint"]["Ports"] == [
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"},
            {"Protocol": "udp", "TargetPort": 81, "PublishedPort": 8081, "PublishMode": "host"},
        ]
        assert n1.json("service", "inspect", "rr")[0]["Endpoint"]["VirtualIPs"] == []
        # tasks: a non-attachable overlay takes a service's tasks, not plain namespaces
        assert (
            "not attachable" in refused(n1, "network", "connect", "ov1", "plain")
            if n1.ctl("netns", "create", "plain")
            else True
        )
        t1 = n1.connect("ov1", "t1", "--service", "web")
        assert t1["Service"] == "web"
        t2 = n2.connect("ov1", "t2", "--service", "web")
        t3 = n2.connect("ov1", "t3", "--service", "rr")
        assert addr(t1) != "10.78.0.2"  # the VIP is taken
        tasks = n3.json("service", "inspect", "web")[0]["Tasks"]
        assert {(t["Name"], t["Node"], t["Addr"]) for t in tasks} == {
            ("t1", "node1", t1["IPv4Address"]),
            ("t2", "node2", t2["IPv4Address"]),
        }
        assert addr(t3)
        # bad input: the field named, nothing changed (the cluster's services and networks read back)
        before = snapshot(c)
        assert any("/netd/v1/services/" in x for x in before) and any("/netd/v1/endpoints/" in x for x in before)
        cases = [
            (n1, ("service", "create", "x", "--network", "ov1", "-p", "81:80", "-p", "81:82"), "published twice"),
            (n1, ("service", "create", "x", "--network", "nope"), "network 'nope' does not exist"),
            (n1, ("service", "create", "x", "--network", "br1"), "overlay networks only"),
            (n1, ("service", "create", "x", "--network", "ov1", "-o", "stickiness=cookie"), "Options.stickiness"),
            (n1, ("service", "create", "x", "--network", "ov1", "-p", "mode=bogus,target=80"), "PublishMode"),
            (
                n1,
                ("service", "create", "x", "--network", "ov1", "-p", "8080:90"),
                "already published by service web",
            ),
            (n1, ("service", "create", "web", "--network", "ov2"), "already exists"),
            (n1, ("service", "rm", "web"), "has 2 task(s)"),
            (n1, ("network", "rm", "ov2"), "used by service(s) rr"),
            (n1, ("network", "connect", "--service", "web", "ov2", "t9"), "is not on network 'ov2'"),
            (n1, ("network", "connect", "--service", "nosuch", "ov1", "t9"), "service 'nosuch' not found"),
            (n1, ("network", "connect", "--service", "web", "br1", "t9"), "overlay networks only"),
        ]
        n1.ctl("netns", "create", "t9")
        for node, args, text in cases:
            assert text in refused(node, *args), args
        assert snapshot(c) == before
        assert in_ns(n1.ns("t9"), "ip", "-o", "link").stdout.count("\n") == 1  # lo only: no half-made endpoint
        bad = n1.ctl("service", "create", "x", "--network", "ov1", "-p", "80:99999", check=False)
        assert bad.returncode == 2 and "not a port" in bad.stderr
        # rm: after its tasks left
        n1.ctl("network", "disconnect", "ov1", "t1")
        n2.ctl("network", "disconnect", "ov1", "t2")
        n1.ctl("service", "rm", "web")
        assert until(lambda: [s["Spec"]["Name"] for s in n3.json("service", "ls", "--format", "json")] == ["rr"])
        assert "not found" in refused(n2, "service", "inspect", "web")
