"""Two simulated nodes on one underlay with an encrypted and a plain VXLAN overlay, for the ESP tests and bench.

``u``: the underlay, a bridge ``ul`` with one port per node (``d1``, ``d2``); node ``n<i>`` holds ``u0``
(10.90.0.<i>) and, per overlay, a VXLAN device (learning off, dstport 4789) on a bridge; endpoint namespaces
``e<i>`` (encrypted, VNI 4097, 10.91.0.<i>) and ``p<i>`` (plain, VNI 4098, 10.92.0.<i>) hang off those bridges.
The VXLAN devices (learning off, proxy on) and their static FDB and neighbour entries come from netd's kernel
layer (``Kernel.ensure_vxlan``/``ensure_vxlan_peers``), the ESP state only from :mod:`netd.kernel.xfrm`; the rest
of the scaffolding (namespaces, veths, bridges, nft rules) uses ``ip``/``nft``.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import TypeVar

from netdtest import sh

from netd.core.ipsecspec import DesiredXfrm, KeyRing, build_xfrm
from netd.core.vxlanspec import PeerEntry, VxlanSpec
from netd.drivers.overlay_crypto import build_mark_rules, plan_xfrm
from netd.kernel import xfrm
from netd.kernel.facade import Kernel
from netd.kernel.netns import setns_net

T = TypeVar("T")
ENC_VNI, PLAIN_VNI = 4097, 4098
NODE_IP = "10.90.0.{}"
OVERLAYS = {ENC_VNI: ("e", "10.91.0.{}"), PLAIN_VNI: ("p", "10.92.0.{}")}
EP_MTU = 1400  # underlay 1500 - VXLAN 50 - ESP (SPI, seq, IV, pad, ICV) ~40


def mac(vni: int, i: int) -> str:
    return f"02:00:00:{vni >> 8 & 0xFF:02x}:{vni & 0xFF:02x}:{i:02x}"


def in_thread_ns(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread moved into the netns at ``path`` (sockets made there stay there)."""
    box: dict[str, object] = {}

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
        raise box["e"]  # type: ignore[misc]
    return box["v"]  # type: ignore[return-value]


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    nodes: tuple[int, ...] = (1, 2)

    def ns(self, kind: str, i: int | str = "") -> str:
        return f"ndt-{kind}{i}-{self.tag}"

    def path(self, kind: str, i: int | str = "") -> str:
        return f"/run/netns/{self.ns(kind, i)}"

    def all_ns(self) -> list[str]:
        out = [self.ns("u")]
        for i in self.nodes:
            out += [self.ns("n", i), self.ns("e", i), self.ns("p", i), self.ns("b", i)]
        return out

    def build(self) -> None:
        for name in self.all_ns():
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        u = ("ip", "-n", self.ns("u"))
        sh(*u, "link", "add", "ul", "type", "bridge")
        sh(*u, "link", "set", "ul", "up")
        for i in self.nodes:
            n = self.ns("n", i)
            sh(*u, "link", "add", f"d{i}", "type", "veth", "peer", "name", "u0", "netns", n)
            sh(*u, "link", "set", f"d{i}", "master", "ul", "up")
            sh("ip", "-n", n, "addr", "add", NODE_IP.format(i) + "/24", "dev", "u0")
            sh("ip", "-n", n, "link", "set", "u0", "up")
            for vni, (kind, net) in OVERLAYS.items():
                self._overlay(i, vni, kind, net)
        for i in self.nodes:
            in_thread_ns(self.path("n", i), lambda i=i: asyncio.run(self._vxlan_peers(i)))  # type: ignore[misc]

    async def _vxlan_peers(self, i: int) -> None:
        """The VXLAN devices and their static FDB/neighbour entries, through netd's own kernel layer."""
        k = Kernel(Path("/run/netns"))
        try:
            for vni, (_kind, net) in OVERLAYS.items():
                spec = VxlanSpec(f"vx{vni}", f"lab-{vni}", vni, ip_address(NODE_IP.format(i)), f"br{vni}")
                await k.ensure_vxlan(spec)
                peers = [
                    PeerEntry(mac(vni, j), (ip_address(net.format(j)),), ip_address(NODE_IP.format(j)))
                    for j in self.nodes
                    if j != i
                ]
                await k.ensure_vxlan_peers(spec.ifname, peers)
        finally:
            await k.close()

    def _overlay(self, i: int, vni: int, kind: str, net: str) -> None:
        n = ("ip", "-n", self.ns("n", i))
        sh(*n, "link", "add", f"br{vni}", "type", "bridge")
        sh(*n, "link", "set", f"br{vni}", "up")
        ep = self.ns(kind, i)
        sh(
            "ip",
            "-n",
            ep,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            f"h{vni}",
            "netns",
            self.ns("n", i),
        )
        sh("ip", "-n", ep, "link", "set", "eth0", "address", mac(vni, i), "mtu", str(EP_MTU))
        sh("ip", "-n", ep, "addr", "add", net.format(i) + "/24", "dev", "eth0")
        sh("ip", "-n", ep, "link", "set", "eth0", "up")
        sh(*n, "link", "set", f"h{vni}", "master", f"br{vni}", "mtu", str(EP_MTU), "up")

    def bridge_pair(self) -> None:
        """A plain bridge between b1 and b2 (both in the underlay namespace's bridge), for the bench."""
        for i in self.nodes:
            b = self.ns("b", i)
            sh(
                "ip",
                "-n",
                b,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                f"b{i}",
                "netns",
                self.ns("u"),
            )
            sh("ip", "-n", b, "addr", "add", f"10.93.0.{i}/24", "dev", "eth0")
            sh("ip", "-n", b, "link", "set", "eth0", "mtu", str(EP_MTU), "up")
            sh("ip", "-n", self.ns("u"), "link", "set", f"b{i}", "master", "ul", "up")

    def cleanup(self) -> None:
        for name in self.all_ns():
            sh("ip", "netns", "del", name, check=False)

    # ------------------------------------------------------------------------------------------ ESP

    def node_ip(self, i: int) -> str:
        return NODE_IP.format(i)

    def desired(
        self, ring: KeyRing, i: int, peers: tuple[int, ...] | None = None, epochs: dict[int, int] | None = None
    ) -> DesiredXfrm:
        """Node i's XFRM state for ``ring``; ``epochs`` maps a node to its incarnation (default 0)."""
        ep = epochs or {}
        others = {ip_address(self.node_ip(j)): ep.get(j, 0) for j in (self.nodes if peers is None else peers)}
        others.pop(ip_address(self.node_ip(i)), None)
        return build_xfrm(ring, ip_address(self.node_ip(i)), others, local_epoch=ep.get(i, 0))

    def observe(self, i: int) -> DesiredXfrm:
        async def go() -> DesiredXfrm:
            with await xfrm.open_xfrm(self.path("n", i)) as xs:
                return await xfrm.observe_xfrm(xs)

        return asyncio.run(go())

    def converge(self, i: int, want: DesiredXfrm) -> None:
        """Observe node i's own XFRM state, plan, apply (what the reconciler does)."""

        async def go() -> None:
            with await xfrm.open_xfrm(self.path("n", i)) as xs:
                await xfrm.apply_xfrm(xs, plan_xfrm(want, await xfrm.observe_xfrm(xs)))

        asyncio.run(go())

    def mark_vni(self, i: int, vni: int) -> None:
        out, inp = build_mark_rules(vni)
        rules = (
            "table inet netd_esp_test {\n"
            f"  chain out {{ type route hook output priority mangle; {out}; }}\n"
            f"  chain inp {{ type filter hook input priority filter; {inp}; }}\n"
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.ns("n", i), "nft", "-f", "-"], input=rules, text=True, check=True
        )


class Capture:
    """Every frame through the underlay port d1 (both directions), read by an AF_PACKET socket in ``u``."""

    def __init__(self, lab: Lab, port: str = "d1") -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.bind((port, 0))
            s.settimeout(0.2)
            return s

        self.sock = in_thread_ns(lab.path("u"), make)
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
class Summary:
    esp_spis: dict[int, int] = field(default_factory=dict)  # SPI -> packets
    vxlan_vnis: dict[int, int] = field(default_factory=dict)  # VNI -> packets


def summarize(frames: list[bytes]) -> Summary:
    out = Summary()
    for f in frames:
        if len(f) < 34 or f[12:14] != b"\x08\x00":
            continue
        ihl = (f[14] & 0xF) * 4
        proto, l4 = f[23], 14 + ihl
        if proto == 50:
            (spi,) = struct.unpack_from(">I", f, l4)
            out.esp_spis[spi] = out.esp_spis.get(spi, 0) + 1
        elif proto == 17 and len(f) >= l4 + 16:
            (dport,) = struct.unpack_from(">H", f, l4 + 2)
            if dport == 4789:
                vni = int.from_bytes(f[l4 + 12 : l4 + 15], "big")
                out.vxlan_vnis[vni] = out.vxlan_vnis.get(vni, 0) + 1
    return out


def tcp_send(lab: Lab, src: str, dst_ns: str, dst_ip: str, payload: bytes, port: int = 7100) -> bytes:
    """Send ``payload`` from namespace ``src`` to a listener in ``dst_ns``; what the listener received."""

    def listen() -> socket.socket:
        s = socket.socket()
        s.bind((dst_ip, port))
        s.listen(1)
        s.settimeout(30)
        return s

    def connect() -> socket.socket:
        return socket.create_connection((dst_ip, port), timeout=30)

    server = in_thread_ns(lab.path(*_split(dst_ns)), listen)
    client = in_thread_ns(lab.path(*_split(src)), connect)
    with server, client:
        conn, _ = server.accept()
        with conn:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
    return got


def _split(kind_i: str) -> tuple[str, int]:
    return kind_i[0], int(kind_i[1:])
