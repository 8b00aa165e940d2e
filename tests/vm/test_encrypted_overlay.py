"""Encrypted overlay networks end to end, in the VM (this machine's kernel has no ESP): three simulated hosts
(namespaces on one underlay bridge), each with its own netd, and an etcd on the underlay (tests/integration/
overlay/mhtest.py).  Everything is asked through netd-ctl; the kernel's XFRM state is read back with netd's
codec in each node's namespace, and the underlay is watched by an AF_PACKET capture on node 1's port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "overlay"))

from mhtest import Cluster, Node, addr, cluster, until
from netdtest import NETD_CTL, reach, sh
from vmnodes import SlowNode

from netd.core.ipsecspec import DesiredXfrm
from netd.kernel import xfrm
from netd.kernel.netns import setns_net

T = TypeVar("T")
MARKER = b"netd-vm-marker-5d1e0b"
BOOT = 300.0  # a daemon's start under TCG (Python imports are 25-40x slower than on the host)


def in_thread_ns(path: str, fn: Callable[[], T]) -> T:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            setns_net(path)
            box["v"] = fn()
        except BaseException as exc:
            box["e"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]  # type: ignore[no-any-return]


def observe(node: Node) -> DesiredXfrm:
    async def go() -> DesiredXfrm:
        with await xfrm.open_xfrm(node.path) as xs:
            return await xfrm.observe_xfrm(xs)

    return asyncio.run(go())


class Capture:
    """Every frame through one underlay port (both directions), read in the segment namespace."""

    def __init__(self, seg_path: str, port: str) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.bind((port, 0))
            s.settimeout(0.2)
            return s

        self.sock = in_thread_ns(seg_path, make)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self.sock.recv(65535))
            except TimeoutError:
                continue

    def stop(self) -> list[bytes]:
        self._stop.set()
        self._t.join()
        self.sock.close()
        return self.frames


@dataclass
class Seen:
    esp: dict[tuple[str, str], int]  # (src, dst) -> ESP packets
    vxlan: dict[int, int]  # VNI -> packets


def summarize(frames: list[bytes]) -> Seen:
    out = Seen({}, {})
    for f in frames:
        if len(f) < 34 or f[12:14] != b"\x08\x00":
            continue
        l4 = 14 + (f[14] & 0xF) * 4
        src, dst = socket.inet_ntoa(f[26:30]), socket.inet_ntoa(f[30:34])
        if f[23] == 50:
            out.esp[(src, dst)] = out.esp.get((src, dst), 0) + 1
        elif f[23] == 17 and len(f) >= l4 + 16 and int.from_bytes(f[l4 + 2 : l4 + 4], "big") == 4789:
            vni = int.from_bytes(f[l4 + 12 : l4 + 15], "big")
            out.vxlan[vni] = out.vxlan.get(vni, 0) + 1
    return out


def vni_of(frame: bytes) -> int | None:
    if frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    l4 = 14 + (frame[14] & 0xF) * 4
    return int.from_bytes(frame[l4 + 12 : l4 + 15], "big")


def tcp_send(src: str, dst: str, ip: str, payload: bytes, port: int) -> bytes:
    """``payload`` from namespace ``src`` to a listener in ``dst``; what the listener received."""

    def listen() -> socket.socket:
        s = socket.socket()
        s.bind((ip, port))
        s.listen(1)
        s.settimeout(60)
        return s

    server = in_thread_ns(dst, listen)
    client = in_thread_ns(src, lambda: socket.create_connection((ip, port), timeout=60))
    with server, client:
        conn, _ = server.accept()
        with conn:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
    return got


def seg_port(c: Cluster, node: Node) -> str:
    return f"u-{node.tag}"


def rotate_key(node: Node, net: str) -> Any:
    """``netd-ctl network rotate-key`` (waits for every node: longer than Host.ctl's 30 s under TCG)."""
    sock = str(node.run_dir / "netd.sock")
    r = sh(NETD_CTL, "--socket", sock, "--timeout", "320", "network", "rotate-key", "--wait", "300", net,
           timeout=330, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def diag(nodes: list[Node]) -> str:
    """What the nodes say about encryption (for assertion messages)."""
    out = []
    for n in nodes:
        r = n.ctl("status", "--format", "json", check=False)
        with contextlib.suppress(ValueError, KeyError):
            out.append(f"{n.node_name}: {json.loads(r.stdout)['cluster'].get('encryption')} {observe(n)}")
        words = ('"encryption', '"network_key', '"level": "error"', '"level": "warning"')
        lines = [ln for ln in n.log_text().splitlines() if any(w in ln for w in words)]
        out += [f"  {ln[:400]}" for ln in lines[-15:]]
    return "\n".join(out)


def start_all(c: Cluster, nodes: list[Node]) -> None:
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_ready(BOOT)


@dataclass
class Lab:
    c: Cluster
    sec: dict[str, Any]  # network inspect of the encrypted network
    plain: dict[str, Any]
    ips: dict[str, str]  # namespace -> its address on "sec" ("a" node1, "b" node2, "c" node3)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with cluster(tmp_path_factory.mktemp("enc"), 0) as c:
        nodes = []
        for i in range(1, 4):  # a 10 s lease: a daemon slowed down by TCG must not miss its keepalives
            node = SlowNode(c.tmp, c.seg, i, c.etcd.endpoints, ttl=10)
            c.nodes.append(node)
            node.boot()
            nodes.append(node)
        start_all(c, nodes)
        n1, n2, n3 = nodes
        n1.ctl("network", "create", "-d", "overlay", "--opt", "encrypted", "--attachable", "--subnet",
               "10.81.0.0/24", "sec")  # fmt: skip
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.82.0.0/24", "plain")
        assert until(lambda: all("plain" in n.ctl("network", "ls").stdout for n in nodes), 120)
        ips = {
            "a": addr(n1.connect("sec", "a")),
            "b": addr(n2.connect("sec", "b")),
            "c": addr(n3.connect("sec", "c")),
            "pa": addr(n1.connect("plain", "a")),
            "pb": addr(n2.connect("plain", "b")),
        }
        sec, plain = n1.json("network", "inspect", "sec")[0], n1.json("network", "inspect", "plain")[0]
        yield Lab(c, sec, plain, ips)


def _converged(n: Node, peers: int) -> bool:
    got = observe(n)
    return len(got.policies) == peers and len(got.sas) == 2 * peers


def test_encrypted_traffic_is_esp_and_plain_traffic_is_vxlan(lab: Lab) -> None:
    c = lab.c
    n1, n2, n3 = c.nodes
    assert lab.sec["Options"] == {"encrypted": "true"} and "encrypted" not in lab.plain["Options"]
    assert lab.sec["MTU"] == lab.plain["MTU"] - 40  # room for ESP: never fragmented after encryption
    for n in (n1, n2, n3):  # every node: one SA each way and one out policy per peer, nothing for "plain"
        assert until(lambda n=n: _converged(n, 2), 120), diag(c.nodes)
    cap = Capture(c.seg_path, seg_port(c, n1))
    try:
        assert reach(n1.ns("a"), lab.ips["b"], deadline=60) and reach(n1.ns("a"), lab.ips["c"], deadline=60)
        assert reach(n1.ns("a"), lab.ips["pb"], deadline=60)
        assert tcp_send(n1.ns("a"), n2.ns("b"), lab.ips["b"], MARKER * 300, 7100) == MARKER * 300
        assert tcp_send(n1.ns("a"), n2.ns("b"), lab.ips["pb"], MARKER * 300, 7101) == MARKER * 300
    finally:
        frames = cap.stop()
    seen = summarize(frames)
    u1, u2, u3 = (n.underlay_ip for n in (n1, n2, n3))
    for pair, least in (((u1, u2), 3), ((u2, u1), 3), ((u1, u3), 1), ((u3, u1), 1)):  # ESP both ways, each peer
        assert seen.esp.get(pair, 0) >= least, seen
    assert seen.vxlan.get(lab.sec["VNI"], 0) == 0, seen  # no cleartext VXLAN of the encrypted network
    # the plain one on the same nodes stays VXLAN (few frames: a veth passes GSO super-packets whole)
    assert seen.vxlan.get(lab.plain["VNI"], 0) >= 2, seen
    leaked = [f for f in frames if MARKER in f]
    # the plain network's copy of the marker is on the wire (so the capture would see a leak), and only that
    assert leaked and all(vni_of(f) == lab.plain["VNI"] for f in leaked)


def test_rotate_key_under_a_10ms_ping_loses_nothing(lab: Lab) -> None:
    c = lab.c
    n1, n2, n3 = c.nodes
    assert reach(n1.ns("a"), lab.ips["b"], deadline=60)
    before = {n.node_name: observe(n) for n in (n1, n2, n3)}
    pinger = subprocess.Popen(
        ["nsenter", f"--net={n1.ns('a')}", "ping", "-n", "-q", "-i", "0.01", "-W", "5", lab.ips["b"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(1.5)
        answer = rotate_key(n1, "sec")
        time.sleep(1.5)
    finally:
        pinger.send_signal(signal.SIGINT)
        out, _ = pinger.communicate(timeout=60)
    assert answer["Complete"] is True and answer["Generation"] == 2 and answer["Stage"] == "prune", diag(c.nodes)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m and int(m.group(1)) >= 100 and m.group(1) == m.group(2), out
    for n in (n1, n2, n3):  # new SAs everywhere, the old generation's gone (the same count: one generation)
        after = observe(n)
        assert len(after.sas) == 4 and not (after.sas & before[n.node_name].sas), n.node_name
        assert {p.tmpl_spi for p in after.policies} & {s.spi for s in after.sas if str(s.src) == n.underlay_ip}
    r = n1.ctl("network", "rotate-key", "plain", check=False)
    assert r.returncode != 0 and "not an encrypted overlay network" in r.stderr, r.stderr
    assert tcp_send(n2.ns("b"), n1.ns("a"), lab.ips["a"], MARKER * 50, 7102) == MARKER * 50


def test_a_rebooted_node_resumes_encryption(lab: Lab) -> None:
    c = lab.c
    n1, n2, _n3 = c.nodes
    old = observe(n1)
    n2.reboot()  # kill -9, its namespace, kernel state and /run gone: a new boot epoch
    start_all(c, [n2])

    def renewed() -> bool:
        """Node 1 holds a new SA from node 2: its SPI and key derive from node 2's new boot epoch (node 2's
        sequence numbers restart at 1, which the old SA's replay window would drop).  Node 1's own SA to node 2
        stays: node 2 installs it again and node 1's sequence numbers go on upwards."""
        new = observe(n1)
        from2 = {s for s in new.sas if str(s.src) == n2.underlay_ip}
        return len(from2) == 1 and not (from2 & old.sas) and _converged(n1, 2) and _converged(n2, 2)

    assert until(renewed, 120), diag(c.nodes)
    cap = Capture(c.seg_path, seg_port(c, n1))
    try:
        assert reach(n1.ns("a"), lab.ips["b"], deadline=60)
        assert tcp_send(n1.ns("a"), n2.ns("b"), lab.ips["b"], MARKER * 50, 7103) == MARKER * 50
    finally:
        frames = cap.stop()
    seen = summarize(frames)
    assert seen.esp.get((n1.underlay_ip, n2.underlay_ip), 0) >= 3 and seen.vxlan.get(lab.sec["VNI"], 0) == 0
    assert not any(MARKER in f for f in frames)


def test_a_node_removed_loses_its_sas_everywhere(lab: Lab) -> None:
    c = lab.c
    n1, n2, n3 = c.nodes
    gone = n3.underlay_ip
    assert any(gone in (str(s.src), str(s.dst)) for s in observe(n1).sas)
    n3.stop()  # for good: its lease runs out
    for n in (n1, n2):
        assert until(lambda n=n: _converged(n, 1), 120), diag(c.nodes)
        left = observe(n)
        assert not any(gone in (str(s.src), str(s.dst)) for s in left.sas)
        assert not any(str(p.dst) == gone for p in left.policies)
    n1.ctl("node", "rm", "node3")
    assert reach(n1.ns("a"), lab.ips["b"], deadline=60)  # the others still talk, encrypted
