"""Services' load balancing on a real kernel with real connections (root; topology in fwtopo.py).

The "node" is the topology's host namespace; the LB backend's worker thread enters it (``netns=``).  c1, c2
(br-a) and c3 (br-b) run ``portecho.py`` (answers its own tag) on port 8080; ``outside`` is the client and
reaches the VIP 10.90.1.200 and the node's own address 10.90.100.1 through its route via the node.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from fwtopo import Topology, sh

from netd.core.errors import FirewallError
from netd.firewall.lb import LbBackend, make_lb_backend
from netd.firewall.lb_model import Backend, LbNode, LbRuleset, PortSpec, Service, build_lb

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ECHO = str(HERE.parent / "portecho.py")
CLIENT = str(HERE / "lbclient.py")
VIP = "10.90.1.200"
NODE_ADDR = "10.90.100.1"
ADDRS = {"c1": "10.90.1.2", "c2": "10.90.1.3", "c3": "10.90.2.2"}
NODE = LbNode("n1", ingress_network="ingress")


def service(
    tasks: tuple[str, ...] = ("c1", "c2", "c3"), *, sticky: bool = False, host_port: bool = False
) -> Service:
    backends: list[Backend] = []
    for t in tasks:
        addr = IPv4Address(ADDRS[t])
        node = "n1" if t == "c1" else "n2"
        backends += [Backend(t, addr, "front", node), Backend(t, addr, "ingress", node)]
    ports = [PortSpec("tcp", 18080, 8080), PortSpec("udp", 18080, 8080)]
    if host_port:
        ports.append(PortSpec("tcp", 18081, 8080, "host"))
    return Service(
        "web",
        (("front", IPv4Address(VIP)), ("ingress", IPv4Address("10.255.0.2"))),
        tuple(ports),
        stickiness="source-ip" if sticky else "none",
        backends=tuple(backends),
    )


def rules(svc: Service) -> LbRuleset:
    return build_lb([svc], NODE)


@pytest.fixture(params=["nftables", "iptables"])
def lb(request: pytest.FixtureRequest, topo: Topology) -> Iterator[LbBackend]:
    for name in ("c1", "c2", "c3"):
        p = subprocess.Popen(
            ["ip", "netns", "exec", getattr(topo, name), sys.executable, ECHO, "serve", name, "8080"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        topo.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    backend = make_lb_backend(request.param, netns=f"/run/netns/{topo.host}")
    try:
        yield backend
    finally:
        backend.close()


def connect(topo: Topology, proto: str, addr: str, port: int, count: int, src: str | None = None) -> list[str]:
    args = [proto, addr, str(port), str(count), *([src] if src else [])]
    out = sh("ip", "netns", "exec", topo.outside, sys.executable, CLIENT, *args, timeout=120).stdout
    return [line.split()[1] for line in out.splitlines()]


def nat_listing(topo: Topology, kind: str) -> str:
    if kind == "nftables":
        return sh("ip", "netns", "exec", topo.host, "nft", "list", "ruleset").stdout
    return sh("ip", "netns", "exec", topo.host, "iptables-save", "-t", "nat").stdout


def test_vip_spreads_over_every_backend(lb: LbBackend, topo: Topology) -> None:
    asyncio.run(lb.apply(rules(service())))
    seen = Counter(connect(topo, "tcp", VIP, 8080, 90))
    assert set(seen) == {"c1", "c2", "c3"}, seen
    assert min(seen.values()) >= 15, seen
    listing = nat_listing(topo, lb.name)
    assert ("table ip netd-lb" if lb.name == "nftables" else ":NETDLB-PRE") in listing
    # UDP through the VIP too, each exchange on a fresh socket (a new flow)
    assert set(connect(topo, "udp", VIP, 8080, 45)) == {"c1", "c2", "c3"}


def test_routing_mesh_published_port_on_the_node_address(lb: LbBackend, topo: Topology) -> None:
    asyncio.run(lb.apply(rules(service(host_port=True))))
    for proto in ("tcp", "udp"):
        seen = Counter(connect(topo, proto, NODE_ADDR, 18080, 60))
        assert set(seen) == {"c1", "c2", "c3"}, (proto, seen)
    # mode=host: only the task on this node (c1) answers, and it sees the client's own address (no masquerade)
    assert set(connect(topo, "tcp", NODE_ADDR, 18081, 20)) == {"c1"}
    out = sh("ip", "netns", "exec", topo.outside, sys.executable, ECHO, "send", "tcp", NODE_ADDR, "18081").stdout
    assert out.split(":")[2] == "10.90.100.2", out


def test_source_ip_stickiness(lb: LbBackend, topo: Topology) -> None:
    for extra in ("10.90.100.3/24", "10.90.100.4/24"):
        sh("ip", "-n", topo.outside, "addr", "add", extra, "dev", "eth0")
    sticky = rules(service(sticky=True))
    if lb.name == "iptables":
        with pytest.raises(FirewallError, match="needs the nftables backend"):
            asyncio.run(lb.apply(sticky))
        assert "NETDLB" not in nat_listing(topo, lb.name)  # refused before anything changed
        return
    asyncio.run(lb.apply(sticky))
    one = Counter(connect(topo, "tcp", VIP, 8080, 30, src="10.90.100.2"))
    assert len(one) == 1 and "-" not in one, one
    per_client = {}
    for src in ("10.90.100.2", "10.90.100.3", "10.90.100.4"):
        got = set(connect(topo, "tcp", VIP, 8080, 10, src=src))
        assert len(got) == 1 and "-" not in got, (src, got)
        per_client[src] = got.pop()
    assert len(set(per_client.values())) > 1, per_client
    # the published port is sticky too
    assert len(set(connect(topo, "tcp", NODE_ADDR, 18080, 20, src="10.90.100.3"))) == 1


def test_removed_backend_gets_no_new_connection(lb: LbBackend, topo: Topology) -> None:
    asyncio.run(lb.apply(rules(service())))
    client = subprocess.Popen(
        ["ip", "netns", "exec", topo.outside, sys.executable, CLIENT, "tcp", VIP, "8080", "100000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    topo.procs.append(client)
    assert client.stdout is not None
    before = [client.stdout.readline() for _ in range(40)]
    change = asyncio.run(lb.apply(rules(service(("c1", "c2")))))
    applied_at = time.monotonic()
    after: list[str] = []
    while len(after) < 100:  # the client keeps connecting until we have seen 100 attempts started after the change
        line = client.stdout.readline()
        assert line, "the client stopped"
        if float(line.split()[0]) > applied_at:
            after.append(line)
    client.kill()
    client.wait(timeout=10)
    assert change.mode == "delta", change
    assert "c3" in {line.split()[1] for line in before}
    tags = Counter(line.split()[1] for line in after)
    assert "c3" not in tags and "-" not in tags, tags
    assert set(tags) == {"c1", "c2"}, tags


def test_udp_flow_moves_off_a_removed_backend(lb: LbBackend, topo: Topology) -> None:
    asyncio.run(lb.apply(rules(service())))
    flow = subprocess.Popen(
        ["ip", "netns", "exec", topo.outside, sys.executable, CLIENT, "udpflow", VIP, "8080", "3"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    topo.procs.append(flow)
    assert flow.stdin is not None and flow.stdout is not None

    def exchange() -> str:
        assert flow.stdin is not None and flow.stdout is not None
        flow.stdin.write("go\n")
        flow.stdin.flush()
        return flow.stdout.readline().strip()

    first = exchange()
    assert first in ADDRS
    assert exchange() == first  # one flow, one backend (conntrack)
    rest = tuple(t for t in ADDRS if t != first)
    change = asyncio.run(lb.apply(rules(service(rest))))
    assert change.flushed >= 1, change  # the flow's conntrack entry went with its backend
    assert exchange() in rest  # the same socket's next datagram reaches a live backend
    flow.wait(timeout=10)


def test_delta_in_sync_repair_and_removal(lb: LbBackend, topo: Topology) -> None:
    two, three = rules(service(("c1", "c2"))), rules(service())
    assert asyncio.run(lb.apply(two)).mode == "full"
    assert asyncio.run(lb.in_sync(two))
    assert not asyncio.run(lb.in_sync(three))
    change = asyncio.run(lb.apply(three))
    assert change.mode == "delta", change  # its size follows the change: see the unit tests
    assert asyncio.run(lb.in_sync(three))
    after_delta = _without_token(nat_listing(topo, lb.name))
    assert asyncio.run(lb.apply(three)).mode == "none"
    if lb.name == "nftables":  # someone else flushes the ruleset
        sh("ip", "netns", "exec", topo.host, "nft", "flush", "ruleset")
    else:
        sh("ip", "netns", "exec", topo.host, "iptables", "-t", "nat", "-F")
    assert not asyncio.run(lb.in_sync(three))
    assert asyncio.run(lb.apply(three)).mode == "full"
    assert asyncio.run(lb.in_sync(three))
    assert _without_token(nat_listing(topo, lb.name)) == after_delta  # the delta made exactly the full ruleset
    assert set(connect(topo, "tcp", VIP, 8080, 45)) == {"c1", "c2", "c3"}
    asyncio.run(lb.remove_all())
    listing = nat_listing(topo, lb.name)
    assert "netd-lb" not in listing and "NETDLB" not in listing, listing
    assert set(connect(topo, "tcp", VIP, 8080, 3)) == {"-"}


def _without_token(listing: str) -> list[str]:
    """The listing's lines, sorted (iptables-save orders chains by creation), without the apply token and the
    counters and handles that differ between two equal rulesets."""
    out = []
    for line in listing.splitlines():
        if line.startswith("#") or "netd-lb:" in line:
            continue
        out.append(re.sub(r"\[\d+:\d+\]", "", line))
    return sorted(out)
