"""The ingress network and published ports' input on three simulated nodes (real etcd, real kernel): an ingress
made with the issue's subnet, gateway and MTU (read back on every node's devices), one ingress per cluster,
its removal refused while a service publishes through it, the default ``ingress`` made when none exists,
``mode=host`` answering only where a task is, and clashes refused with the field named and nothing changed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mhtest import PORTECHO, SEG_IP, Cluster, cluster, until
from netdtest import in_ns
from svctest import hits, servers
from test_service_api import etcd_dump, refused

PORT = 7070


def snapshot(c: Cluster) -> list[str]:
    """etcd, minus what changes by itself (nodes' leases: a loaded machine may let one lapse and come back),
    and every node's kernel."""
    keep = [x for x in etcd_dump(c) if "last_seen" not in x and '"lease"' not in x and "/alive/" not in x]
    return keep + [n.kernel_snapshot() for n in c.nodes]


def link(c: Cluster, node: int, dev: str) -> dict[str, object]:
    out = in_ns(c.nodes[node].path, "ip", "-j", "addr", "show", "dev", dev, check=False).stdout
    found = json.loads(out) if out.strip() else []
    return found[0] if found else {}


def addrs(info: dict[str, object]) -> set[str]:
    raw = info.get("addr_info", [])
    assert isinstance(raw, list)
    return {f"{a['local']}/{a['prefixlen']}" for a in raw}


def test_ingress_network_and_clashes(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        n1, n2, n3 = c.nodes
        n1.ctl(
            "network", "create", "-d", "overlay", "--ingress", "--subnet=10.11.0.0/16", "--gateway=10.11.0.2",
            "-o", "com.docker.network.driver.mtu=1200", "my-ingress",
        )  # fmt: skip
        assert until(lambda: any(n["Name"] == "my-ingress" for n in n3.json("network", "ls", "--format", "json")))
        ing = n3.json("network", "inspect", "my-ingress")[0]
        assert ing["Ingress"] is True and ing["Driver"] == "overlay"
        assert ing["IPAM"]["Config"][0]["Subnet"] == "10.11.0.0/16"
        assert ing["IPAM"]["Config"][0]["Gateway"] == "10.11.0.2"
        bridge, vxlan = "ov-" + ing["Id"][:12], "vx-" + ing["Id"][:12]
        # every node is on the ingress network (its own address there), with the gateway and the MTU asked for
        for i in range(3):
            assert until(lambda i=i: "10.11.0.2/16" in addrs(link(c, i, bridge)), 30), link(c, i, bridge)
            assert link(c, i, bridge)["mtu"] == 1200 and link(c, i, vxlan)["mtu"] == 1200
            own = addrs(link(c, i, bridge)) - {"10.11.0.2/16"}
            assert len(own) == 1 and next(iter(own)).startswith("10.11."), own
        # one ingress per cluster: a second is refused naming the first, nothing changed
        before = snapshot(c)
        err = refused(n2, "network", "create", "-d", "overlay", "--ingress", "--subnet=10.12.0.0/24", "ingress2")
        assert "my-ingress" in err and "Ingress" in err, err
        err = refused(n2, "network", "create", "--ingress", "br-ing")
        assert "-d overlay" in err, err
        assert snapshot(c) == before
        # a service publishing through the mesh uses it (no default ingress made)
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.79.0.0/24", "ov1")
        n1.ctl("service", "create", "web", "--network", "ov1", "-p", f"8080:{PORT}")
        assert not any(n["Name"] == "ingress" for n in n1.json("network", "ls", "--format", "json"))
        assert until(lambda: "web" in n2.ctl("service", "ls").stdout)
        n2.ctl("network", "create", "--subnet", "172.31.9.0/24", "br1")
        before = snapshot(c)
        # removing the ingress while web publishes through it: refused, naming the service
        err = refused(n2, "network", "rm", "my-ingress")
        assert "web" in err and "service rm" in err, err
        # bad input: the field named, nothing changed (etcd and every kernel read back)
        err = refused(n3, "service", "create", "web2", "--network", "ov1", "-p", "8080:80")
        assert "PublishedPort" in err and "web" in err, err
        err = refused(n3, "service", "create", "web3", "--network", "ov1", "-p", "9000:80", "-p", "9000:81")
        assert "PublishedPort" in err and "twice" in err, err
        err = refused(
            n3, "service", "create", "web4", "--network", "ov1", "-p", "mode=bogus,published=9001,target=80"
        )
        assert "PublishMode" in err, err
        n2.ctl("netns", "create", "pub")
        err = refused(n2, "network", "connect", "-p", "8080:80", "br1", "pub")  # a -p port on the mesh's
        assert "publish" in err and "web" in err and "8080/tcp" in err, err
        assert snapshot(c) == before
        # and the other way round: a -p port first, then a service on it
        n2.ctl("network", "connect", "-p", "9100:80", "br1", "pub")
        err = refused(n2, "service", "create", "web5", "--network", "ov1", "-p", "9100:80")
        assert "PublishedPort" in err and "pub" in err, err
        assert not any(s["Spec"]["Name"] == "web5" for s in n1.json("service", "ls", "--format", "json"))
        # the ingress goes once no service publishes through it; then the default one is made on demand
        n1.ctl("service", "rm", "web")
        n1.ctl("network", "rm", "my-ingress")
        assert until(lambda: not link(c, 2, bridge), 30)
        n3.ctl("service", "create", "web6", "--network", "ov1", "-p", f"8082:{PORT}")
        ing = n1.json("network", "inspect", "ingress")[0]
        assert ing["Ingress"] is True and ing["IPAM"]["Config"][0]["Subnet"] == "10.0.0.0/24"


def test_mode_host(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        n1, n2, _n3 = c.nodes
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.79.0.0/24", "ov1")
        n1.ctl(
            "service", "create", "hs", "--network", "ov1", "--publish", f"mode=host,published=8081,target={PORT}"
        )
        assert until(lambda: "hs" in n2.ctl("service", "ls").stdout)
        n2.connect("ov1", "h2", "--service", "hs")
        ports = n1.json("service", "inspect", "hs")[0]["Endpoint"]["Ports"]
        assert ports == [{"Protocol": "tcp", "TargetPort": PORT, "PublishedPort": 8081, "PublishMode": "host"}]
        # no ingress network for a service without mesh ports; the task is not on one
        assert not any(n["Name"] == "ingress" for n in n1.json("network", "ls", "--format", "json"))
        with servers({"h2": n2.ns("h2")}, PORT):
            # node2 (the task's) answers with its local task; node1 and node3 do not answer at all
            assert until(lambda: set(hits(c.seg_path, n2.underlay_ip, 8081, 5)) == {"h2"}, 30)
            for other in (c.nodes[0], c.nodes[2]):
                assert set(hits(c.seg_path, other.underlay_ip, 8081, 3)) == {"-"}
            # the client's address is kept (no SNAT), as a -p port does
            out = in_ns(c.seg_path, sys.executable, PORTECHO, "send", "tcp", n2.underlay_ip, "8081").stdout
            assert out.split(":")[2] == SEG_IP, out
            # the task goes: node2 stops answering
            n2.ctl("network", "disconnect", "ov1", "h2")
            assert until(lambda: set(hits(c.seg_path, n2.underlay_ip, 8081, 3)) == {"-"}, 30)
