"""The overlay data plane's kernel primitives (netd.kernel.vxlan through the Kernel facade) with real traffic.

Two simulated nodes (namespaces ``n1``/``n2``) hang off an underlay bridge in a third namespace; each node gets
an overlay bridge + VXLAN device made by netd's kernel functions (run in a thread inside the node's namespace,
as the other kernel tests do) and an endpoint namespace with a veth on the bridge.  Remote endpoints are
programmed statically; without entries nothing crosses.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import Any

import pytest
from kernelenv import Env, need_root, nsip, sh, umount_all_under
from pyroute2 import AsyncIPRoute

from netd.core.errors import InvalidError, KernelError
from netd.core.linkspec import BridgeSpec, NsRef, VethSpec
from netd.core.vxlanspec import FdbEntry, NeighEntry, ObservedEntries, PeerEntry, VxlanSpec
from netd.kernel import rtbatch
from netd.kernel.facade import Kernel

UNDERLAY = {1: "192.0.2.1", 2: "192.0.2.2"}
UNDERLAY6 = {1: "2001:db8:5::1", 2: "2001:db8:5::2"}
TCP_PORT = 17000


@dataclass
class Net:
    """One overlay network: its VNI, device names, subnet base and the endpoint of each node."""

    id: str
    vni: int
    bridge: str
    vxlan: str
    mac_base: int  # endpoint MACs 02:42:0a:<mac_base>:00:<node>

    def ep_mac(self, node: int) -> str:
        return f"02:42:0a:{self.mac_base:02x}:00:{node:02x}"

    def ep_ip(self, node: int) -> str:
        return f"10.99.0.{self.mac_base + node}"

    def ep_ip6(self, node: int) -> str:
        return f"fd00:99::{self.mac_base + node:x}"

    def ep_ns(self, node: int) -> str:
        return f"{self.id}-c{node}"


NET1 = Net("ov1", 100, "br-ov1", "vx-ov1", 0x10)
NET2 = Net("ov2", 200, "br-ov2", "vx-ov2", 0x20)


@dataclass
class Fabric:
    underlay: str  # netns name of the underlay switch
    nodes: dict[int, Env]
    addr: dict[int, str]  # the nodes' underlay addresses

    def peer(self, net: Net, node: int) -> PeerEntry:
        """``net``'s endpoint on ``node``, as the other nodes program it."""
        ips = (ip_address(net.ep_ip(node)), ip_address(net.ep_ip6(node)))
        return PeerEntry(net.ep_mac(node), ips, ip_address(self.addr[node]))

    def ep_path(self, node: int, net: Net) -> str:
        return self.nodes[node].ns(net.ep_ns(node))


def make_fabric(addr: dict[int, str]) -> Iterator[Fabric]:
    need_root()
    tag = secrets.token_hex(3)
    under = f"tu-{tag}"
    names = {n: f"tn{n}-{tag}" for n in (1, 2)}
    bases = {n: Path(f"/run/netd-test-{tag}-n{n}") for n in (1, 2)}
    made: list[str] = []
    try:
        for name in (under, *names.values()):
            sh("ip", "netns", "add", name)
            made.append(name)
        sh("ip", "-n", under, "link", "add", "ubr", "type", "bridge")
        sh("ip", "-n", under, "link", "set", "ubr", "up")
        for n, name in names.items():
            sh("ip", "-n", under, "link", "add", f"u{n}", "type", "veth", "peer", "name", "eth0", "netns", name)
            sh("ip", "-n", under, "link", "set", f"u{n}", "master", "ubr", "up")
            prefix = 64 if ":" in addr[n] else 24
            sh("ip", "-n", name, "addr", "add", f"{addr[n]}/{prefix}", "dev", "eth0", "nodad")
            sh("ip", "-n", name, "link", "set", "eth0", "up")
            sh("ip", "-n", name, "link", "set", "lo", "up")
        nodes = {n: Env(name, f"/run/netns/{name}", bases[n] / "netns") for n, name in names.items()}
        yield Fabric(under, nodes, addr)
    finally:
        for base in bases.values():
            umount_all_under(base)
            shutil.rmtree(base, ignore_errors=True)
        for name in made:
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def fabric() -> Iterator[Fabric]:
    yield from make_fabric(UNDERLAY)


@pytest.fixture
def fabric6() -> Iterator[Fabric]:
    yield from make_fabric(UNDERLAY6)


def specs(fab: Fabric, node: int, net: Net) -> tuple[BridgeSpec, VxlanSpec, VethSpec]:
    bridge = BridgeSpec(
        ifname=net.bridge,
        owner=net.id,
        mtu=None,
        addresses=(ip_interface("10.99.0.1/24"), ip_interface("fd00:99::1/64")),
        mac=f"02:42:ff:{net.mac_base:02x}:00:{node:02x}",  # per node: the gateway stays local
    )
    vxlan = VxlanSpec(
        ifname=net.vxlan, owner=net.id, vni=net.vni, local=ip_address(fab.addr[node]), master=net.bridge
    )
    veth = VethSpec(
        host_ifname=f"v{net.id}n{node}",
        owner=f"{net.id}-ep{node}",
        bridge=net.bridge,
        mtu=1450,
        netns=NsRef(fab.ep_path(node, net)),
        peer_ifname="eth0",
        mac=net.ep_mac(node),
        addresses=(ip_interface(f"{net.ep_ip(node)}/24"), ip_interface(f"{net.ep_ip6(node)}/64")),
    )
    return bridge, vxlan, veth


def build_node(fab: Fabric, node: int, net: Net) -> bool:
    """Bridge, VXLAN device and one endpoint on ``node``; returns ensure_vxlan's "made"."""
    bridge, vxlan, veth = specs(fab, node, net)

    async def body(k: Kernel) -> bool:
        await k.ensure_bridge(bridge)
        made = await k.ensure_vxlan(vxlan)
        await k.ensure_netns(net.ep_ns(node))
        await k.ensure_veth(veth)
        return made

    return bool(fab.nodes[node].run(body))


def program(fab: Fabric, node: int, net: Net, peers: list[PeerEntry]) -> Any:
    async def body(k: Kernel) -> Any:
        return await k.ensure_vxlan_peers(net.vxlan, peers)

    return fab.nodes[node].run(body)


def observe(fab: Fabric, node: int, net: Net) -> ObservedEntries:
    async def body(k: Kernel) -> ObservedEntries:
        return await k.observe_vxlan_entries(net.vxlan)

    return fab.nodes[node].run(body)  # type: ignore[no-any-return]


def ping(path: str, ip: str, wait: int = 5) -> bool:
    return sh("nsenter", f"--net={path}", "ping", "-n", "-q", "-c1", f"-w{wait}", ip, check=False).returncode == 0


def unreachable(path: str, ip: str) -> bool:
    """No reply within 2 s.  Then the client's failed neighbour entry is dropped: the kernel answers "host
    unreachable" from a fresh FAILED entry at once, which would fail the next check for a reason that is not
    the data plane's."""
    answered = ping(path, ip, wait=2)
    sh("nsenter", f"--net={path}", "ip", "neigh", "flush", "dev", "eth0")
    return not answered


def tcp_echo(server_path: str, client_path: str, ip: str) -> str:
    """Start a one-shot TCP echo server in ``server_path``; connect from ``client_path``; the answer."""
    family = "AF_INET6" if ":" in ip else "AF_INET"
    server = (
        "import socket,sys\n"
        f"s=socket.socket(socket.{family});s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        f"s.bind(('{ip}',{TCP_PORT}));s.listen(1);print('ready',flush=True)\n"
        "c,_=s.accept();c.sendall(b'echo:'+c.recv(100));c.close()\n"
    )
    client = (
        "import socket\n"
        f"s=socket.create_connection(('{ip}',{TCP_PORT}),timeout=5);s.sendall(b'hello');print(s.recv(100).decode())\n"
    )
    proc = subprocess.Popen(
        ["nsenter", f"--net={server_path}", "python3", "-c", server], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        out = sh("nsenter", f"--net={client_path}", "python3", "-c", client, check=False)
        return out.stdout.strip()
    finally:
        proc.kill()
        proc.wait()


NFT_COUNTERS = """
table bridge vxt {
  counter n1_to_n2 {}
  counter n2_to_n1 {}
  chain count {
    type filter hook forward priority 0;
    ip saddr 192.0.2.1 ip daddr 192.0.2.2 udp dport 4789 counter name n1_to_n2
    ip saddr 192.0.2.2 ip daddr 192.0.2.1 udp dport 4789 counter name n2_to_n1
  }
}
"""


def underlay_counts(fab: Fabric) -> tuple[int, int]:
    out = sh("ip", "netns", "exec", fab.underlay, "nft", "-j", "list", "counters", "table", "bridge", "vxt").stdout
    counters = {
        c["counter"]["name"]: c["counter"]["packets"] for c in json.loads(out)["nftables"] if "counter" in c
    }
    return counters["n1_to_n2"], counters["n2_to_n1"]


def vxlan_link(fab: Fabric, node: int, net: Net) -> dict[str, Any]:
    return nsip(fab.nodes[node].host_path, "-d", "-s", "link", "show", "dev", net.vxlan)[0]  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------------ tests


def test_static_peers_carry_traffic_and_nothing_floods(fabric: Fabric) -> None:
    fab = fabric
    subprocess.run(
        ["ip", "netns", "exec", fab.underlay, "nft", "-f", "-"], input=NFT_COUNTERS, text=True, check=True
    )
    for n in (1, 2):
        assert build_node(fab, n, NET1) is True
    dev = vxlan_link(fab, 1, NET1)
    info = dev["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["local"]) == (100, 4789, "192.0.2.1")
    assert info["learning"] is False and info["proxy"] is True
    assert not info.get("l2miss") and not info.get("l3miss") and "group" not in info and "remote" not in info
    assert dev["mtu"] == 1450  # underlay 1500 - 50
    assert dev["master"] == NET1.bridge and "UP" in dev["flags"]
    assert dev["ifalias"] == "netd:ov1"
    c1, c2 = fab.ep_path(1, NET1), fab.ep_path(2, NET1)

    # no entries yet: neither ARP (proxy finds no neighbour) nor frames cross; nothing leaves towards n2
    assert unreachable(c1, NET1.ep_ip(2))
    assert underlay_counts(fab) == (0, 0)
    assert observe(fab, 1, NET1) == ObservedEntries()

    plan1 = program(fab, 1, NET1, [fab.peer(NET1, 2)])
    program(fab, 2, NET1, [fab.peer(NET1, 1)])
    assert len(plan1.fdb_put) == 1 and len(plan1.neigh_put) == 2
    seen = observe(fab, 1, NET1)
    assert seen.fdb == (FdbEntry(NET1.ep_mac(2), ip_address("192.0.2.2")),)
    assert set(seen.neigh) == {
        NeighEntry(ip_address(NET1.ep_ip(2)), NET1.ep_mac(2)),
        NeighEntry(ip_address(NET1.ep_ip6(2)), NET1.ep_mac(2)),
    }
    assert len(seen.neigh) == 2

    assert ping(c1, NET1.ep_ip(2)) and ping(c2, NET1.ep_ip(1))
    assert ping(c1, NET1.ep_ip6(2)) and ping(c2, NET1.ep_ip6(1))
    assert tcp_echo(c2, c1, NET1.ep_ip(2)) == "echo:hello"
    assert tcp_echo(c1, c2, NET1.ep_ip6(1)) == "echo:hello"
    a_to_b, b_to_a = underlay_counts(fab)
    assert a_to_b > 0 and b_to_a > 0  # UDP 4789 between the node addresses on the underlay
    stats = vxlan_link(fab, 1, NET1)["stats64"]
    assert stats["tx"]["packets"] > 0 and stats["rx"]["packets"] > 0

    # the entries removed on both nodes: traffic stops (no learning, no flooding brings it back)
    for n in (1, 2):
        plan = program(fab, n, NET1, [])
        assert len(plan.fdb_del) == 1 and len(plan.neigh_del) == 2
        assert observe(fab, n, NET1) == ObservedEntries()
    before = underlay_counts(fab)
    assert unreachable(c1, NET1.ep_ip(2))
    assert unreachable(c2, NET1.ep_ip6(1))
    assert underlay_counts(fab) == before
    assert observe(fab, 1, NET1) == ObservedEntries()  # nothing learned either


def test_two_vnis_between_the_same_nodes_are_isolated(fabric: Fabric) -> None:
    fab = fabric
    for net in (NET1, NET2):
        for n in (1, 2):
            build_node(fab, n, net)
        program(fab, 1, net, [fab.peer(net, 2)])
        program(fab, 2, net, [fab.peer(net, 1)])
    assert ping(fab.ep_path(1, NET1), NET1.ep_ip(2)) and ping(fab.ep_path(1, NET2), NET2.ep_ip(2))
    # same subnet on both networks: ov2's endpoint on n1 cannot reach ov1's on n2, not even when n1's ov2 device
    # is told where that endpoint is: the frames arrive with VNI 200 and end on n2's ov2 bridge
    assert unreachable(fab.ep_path(1, NET2), NET1.ep_ip(2))
    program(fab, 1, NET2, [fab.peer(NET2, 2), fab.peer(NET1, 2)])
    tx_before = vxlan_link(fab, 1, NET2)["stats64"]["tx"]["packets"]
    assert unreachable(fab.ep_path(1, NET2), NET1.ep_ip(2))
    assert vxlan_link(fab, 1, NET2)["stats64"]["tx"]["packets"] > tx_before  # it did cross the underlay
    assert ping(fab.ep_path(1, NET1), NET1.ep_ip(2))


def test_ensure_is_idempotent_and_repairs_drift(fabric: Fabric) -> None:
    fab = fabric
    for n in (1, 2):
        build_node(fab, n, NET1)
    program(fab, 2, NET1, [fab.peer(NET1, 1)])
    _bridge, vxlan, _veth = specs(fab, 1, NET1)
    peers = [fab.peer(NET1, 2)]
    env = fab.nodes[1]

    async def body(k: Kernel) -> None:
        assert (await k.ensure_vxlan_peers(NET1.vxlan, peers)).fdb_put
        index = (await k.observe_vxlan(NET1.vxlan)).index  # type: ignore[union-attr]
        programmed = await k.observe_vxlan_entries(NET1.vxlan)
        # a second ensure changes nothing
        assert await k.ensure_vxlan(vxlan) is False
        assert not await k.ensure_vxlan_peers(NET1.vxlan, peers)
        assert (await k.observe_vxlan(NET1.vxlan)).index == index  # type: ignore[union-attr]
        assert await k.observe_vxlan_entries(NET1.vxlan) == programmed

        # by hand: an entry deleted, a neighbour pointing elsewhere, a flooding entry and a stray neighbour
        ipr = AsyncIPRoute()
        await ipr.setup_endpoint()
        try:
            await ipr.fdb("del", ifindex=index, lladdr=NET1.ep_mac(2), dst="192.0.2.2")
            await ipr.neigh("replace", ifindex=index, dst=NET1.ep_ip6(2), lladdr="02:00:00:00:00:99", state=0x80)
            await ipr.fdb("append", ifindex=index, lladdr="00:00:00:00:00:00", dst="192.0.2.2")
            await ipr.neigh("add", ifindex=index, dst="10.99.0.77", lladdr="02:00:00:00:00:77", state=0x80)
            drifted = await k.observe_vxlan_entries(NET1.vxlan)
            assert FdbEntry("00:00:00:00:00:00", ip_address("192.0.2.2")) in drifted.fdb
            plan = await k.ensure_vxlan_peers(NET1.vxlan, peers)
            assert [e.mac for e in plan.fdb_put] == [NET1.ep_mac(2)]
            assert [e.mac for e in plan.fdb_del] == ["00:00:00:00:00:00"]
            assert [str(e.ip) for e in plan.neigh_put] == [NET1.ep_ip6(2)]
            assert [str(e.ip) for e in plan.neigh_del] == ["10.99.0.77"]
            assert await k.observe_vxlan_entries(NET1.vxlan) == programmed
            assert not await k.ensure_vxlan_peers(NET1.vxlan, peers)

            # the device down, another MTU, off its bridge: repaired in place (same device)
            await ipr.link("set", index=index, state="down", mtu=1400, master=0)
        finally:
            ipr.close()
        assert await k.ensure_vxlan(vxlan) is False
        seen = await k.observe_vxlan(NET1.vxlan)
        assert seen is not None and seen.index == index and seen.up and seen.mtu == 1450
        # a device going down loses its neighbour entries (the kernel flushes them): the next ensure puts them back
        plan = await k.ensure_vxlan_peers(NET1.vxlan, peers)
        assert {str(e.ip) for e in plan.neigh_put} == {NET1.ep_ip(2), NET1.ep_ip6(2)}
        assert await k.observe_vxlan_entries(NET1.vxlan) == programmed

        # a wrong VNI/port/local cannot be changed in place: the device is made again (entries with it)
        assert await k.ensure_vxlan(replace(vxlan, vni=101)) is True
        seen = await k.observe_vxlan(NET1.vxlan)
        assert seen is not None and seen.vni == 101 and seen.index != index
        assert await k.observe_vxlan_entries(NET1.vxlan) == ObservedEntries()
        assert await k.ensure_vxlan(vxlan) is True
        assert (await k.ensure_vxlan_peers(NET1.vxlan, peers)).fdb_put

    env.run(body)
    master = nsip(env.host_path, "link", "show", "dev", NET1.vxlan)[0]["master"]
    assert master == NET1.bridge
    assert ping(fab.ep_path(1, NET1), NET1.ep_ip(2)) and ping(fab.ep_path(1, NET1), NET1.ep_ip6(2))


def test_bad_input_and_foreign_devices(fabric: Fabric) -> None:
    fab = fabric
    env = fab.nodes[1]
    bridge, vxlan, _veth = specs(fab, 1, NET1)
    sh("ip", "-n", env.host_name, "link", "add", "vx-foreign", "type", "vxlan", "id", "300", "dstport", "4789")
    sh("ip", "-n", env.host_name, "link", "set", "vx-foreign", "up")

    async def body(k: Kernel) -> None:
        with pytest.raises(KernelError, match='master bridge "br-ov1" not found'):
            await k.ensure_vxlan(vxlan)
        await k.ensure_bridge(bridge)
        with pytest.raises(KernelError, match=r"192\.0\.2\.9: not configured on any interface"):
            await k.ensure_vxlan(replace(vxlan, local=ip_address("192.0.2.9")))
        with pytest.raises(KernelError, match="not managed by netd"):
            await k.ensure_vxlan(replace(vxlan, ifname="vx-foreign"))
        with pytest.raises(KernelError, match="already uses VNI 300"):
            await k.ensure_vxlan(replace(vxlan, vni=300))
        with pytest.raises(KernelError, match='kind "bridge"'):
            await k.ensure_vxlan(replace(vxlan, ifname=NET1.bridge))
        with pytest.raises(KernelError, match="ensure the overlay network's VXLAN device first"):
            await k.ensure_vxlan_peers("vx-missing", [])
        await k.ensure_vxlan(vxlan)
        with pytest.raises(KernelError, match='belongs to "netd:ov1"'):
            await k.ensure_vxlan(replace(vxlan, owner="other"))
        await k.delete_vxlan(NET1.vxlan)
        await k.delete_vxlan(NET1.vxlan)  # missing is fine
        assert await k.observe_vxlan(NET1.vxlan) is None

    env.run(body)
    names = [x["ifname"] for x in env.ip("link")]
    assert sorted(names) == sorted(["lo", "eth0", "vx-foreign", NET1.bridge])  # nothing half-made
    assert "ifalias" not in nsip(env.host_path, "link", "show", "dev", "vx-foreign")[0]


def test_ipv6_underlay(fabric6: Fabric) -> None:
    """Nodes that advertise IPv6 addresses: the device sends from local6, the MTU leaves 70 bytes of headroom,
    and a peer behind an IPv4 node address is refused (one device speaks one IP version)."""
    fab = fabric6
    for n in (1, 2):
        build_node(fab, n, NET1)
    info = vxlan_link(fab, 1, NET1)
    assert info["linkinfo"]["info_data"]["local6"] == "2001:db8:5::1"
    assert info["mtu"] == 1430  # 1500 - 70
    program(fab, 1, NET1, [fab.peer(NET1, 2)])
    program(fab, 2, NET1, [fab.peer(NET1, 1)])
    assert observe(fab, 1, NET1).fdb == (FdbEntry(NET1.ep_mac(2), ip_address("2001:db8:5::2")),)
    c1, c2 = fab.ep_path(1, NET1), fab.ep_path(2, NET1)
    assert ping(c1, NET1.ep_ip(2)) and ping(c2, NET1.ep_ip6(1))
    assert tcp_echo(c2, c1, NET1.ep_ip(2)) == "echo:hello"
    assert vxlan_link(fab, 2, NET1)["stats64"]["rx"]["packets"] > 0
    v4_node = PeerEntry("02:42:0a:10:00:09", (ip_address("10.99.0.9"),), ip_address("192.0.2.9"))
    with pytest.raises(InvalidError, match=r"node address 192\.0\.2\.9 is IPv4.*one IP version"):
        program(fab, 1, NET1, [fab.peer(NET1, 2), v4_node])
    assert observe(fab, 1, NET1).fdb == (FdbEntry(NET1.ep_mac(2), ip_address("2001:db8:5::2")),)  # unchanged


def test_many_peers_span_several_batches(fabric: Fabric, monkeypatch: pytest.MonkeyPatch) -> None:
    """600 peers (1800 entries: 8 datagrams): observe returns exactly them; a second ensure writes nothing;
    a changed subset is rewritten alone; all removed in one call.  With a small receive buffer the batches
    shrink so that no ack is lost."""
    fab = fabric
    build_node(fab, 1, NET1)
    peers = [
        PeerEntry(
            f"02:42:0b:00:{i // 256:02x}:{i % 256:02x}",
            (ip_address(f"10.98.{i // 256}.{i % 256}"), ip_address(f"fd00:98::{i:x}")),
            ip_address(f"192.0.2.{10 + i % 100}"),
        )
        for i in range(600)
    ]
    env = fab.nodes[1]

    async def body(k: Kernel) -> None:
        plan = await k.ensure_vxlan_peers(NET1.vxlan, peers)
        assert len(plan.fdb_put) == 600 and len(plan.neigh_put) == 1200
        seen = await k.observe_vxlan_entries(NET1.vxlan)
        assert {(e.mac, e.dst, e.permanent) for e in seen.fdb} == {(p.mac, p.vtep, True) for p in peers}
        assert len(seen.fdb) == 600 and len(seen.neigh) == 1200
        assert {(e.ip, e.mac) for e in seen.neigh} == {(ip, p.mac) for p in peers for ip in p.addresses}
        assert all(e.permanent for e in seen.neigh)
        assert not await k.ensure_vxlan_peers(NET1.vxlan, peers)
        moved = [replace(p, vtep=ip_address("192.0.2.250")) if i % 100 == 0 else p for i, p in enumerate(peers)]
        plan = await k.ensure_vxlan_peers(NET1.vxlan, moved)
        assert len(plan.fdb_put) == 6 and not plan.fdb_del and not plan.neigh_put and not plan.neigh_del
        assert not await k.ensure_vxlan_peers(NET1.vxlan, moved)
        plan = await k.ensure_vxlan_peers(NET1.vxlan, [])
        assert len(plan.fdb_del) == 600 and len(plan.neigh_del) == 1200
        assert await k.observe_vxlan_entries(NET1.vxlan) == ObservedEntries()

        monkeypatch.setattr(rtbatch, "RCVBUF", 8192)  # the kernel doubles it: 16 acks per datagram
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as sock:
            assert rtbatch._grow_rcvbuf(sock) == 16
        await k.ensure_vxlan_peers(NET1.vxlan, peers)
        seen = await k.observe_vxlan_entries(NET1.vxlan)
        assert len(seen.fdb) == 600 and len(seen.neigh) == 1200
        assert not await k.ensure_vxlan_peers(NET1.vxlan, peers)

    env.run(body)
