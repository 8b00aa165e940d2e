"""Cluster records -> one node's state and entries (pure); the single-host daemon loads no cluster code."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address, IPv4Interface

from netd.cluster.records import EndpointRecord, NodeAlive, OverlayNetwork
from netd.core.model import IpamConfig
from netd.multihost.mirror import network_from_record, peers_of


def _rec(ep: str, node: str, ip: str, created: str = "") -> EndpointRecord:
    a = IPv4Address(ip)
    return EndpointRecord(
        id=ep,
        network="n",
        node=node,
        mac="02:42:" + ":".join(f"{b:02x}" for b in a.packed),
        ipv4=IPv4Interface(f"{ip}/24"),
        created=created,
    )


def _alive(name: str, addr: str) -> NodeAlive:
    return NodeAlive(name=name, lease=1, advertise_address=IPv4Address(addr))


def test_peers_are_remote_endpoints_of_alive_nodes_newest_wins() -> None:
    alive = {"a": _alive("a", "192.0.2.1"), "b": _alive("b", "192.0.2.2")}
    recs = [
        _rec("e1", "a", "10.0.9.2"),  # this node
        _rec("e2", "b", "10.0.9.3"),
        _rec("e3", "c", "10.0.9.4"),  # node c is not alive
        _rec("e4", "b", "10.0.9.5", created="1"),
        _rec("e5", "b", "10.0.9.5", created="2"),  # the same address again (a stale record): the newer wins
    ]
    peers = peers_of(recs, alive, "a")
    assert [(str(p.addresses[0]), str(p.vtep)) for p in peers] == [
        ("10.0.9.3", "192.0.2.2"),
        ("10.0.9.5", "192.0.2.2"),
    ]


def test_a_network_record_becomes_this_nodes_copy() -> None:
    from ipaddress import IPv4Network

    rec = OverlayNetwork(
        id="f" * 64,
        name="ov",
        vni=4097,
        attachable=True,
        ipam=[IpamConfig(subnet=IPv4Network("10.0.9.0/24"), gateway=IPv4Address("10.0.9.1"))],
    )
    net = network_from_record(rec, 1450)
    assert (net.driver, net.vni, net.mtu, net.bridge, net.vxlan) == (
        "overlay",
        4097,
        1450,
        "ov-ffffffffffff",
        "vx-ffffffffffff",
    )
    assert network_from_record(rec.model_copy(update={"mtu": 1400}), 1450).mtu == 1400


def test_the_single_host_daemon_imports_no_cluster_code() -> None:
    code = (
        "import sys, netd.daemon, netd.api, netd.engine.service, netd.engine.reconciler, netd.drivers;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('aetcd', 'grpc') "
        "or m.startswith(('netd.cluster', 'netd.multihost')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
