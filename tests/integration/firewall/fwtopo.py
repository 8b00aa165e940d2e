"""Real-kernel helpers for the firewall tests: every test runs in namespaces it creates and deletes.

Topology (one set of namespaces per test, names unique per test)::

    c1 (10.90.1.2) ─┐                         ┌─ c3 (10.90.2.2)
    c2 (10.90.1.3) ─┤ br-a 10.90.1.1/24       │ br-b 10.90.2.1/24
                    └──────────── host ───────┘
                                   │ vout 10.90.100.1/24
                                 outside (10.90.100.2, route to 10.90.0.0/16 via the host)

The backend runs in a thread of this process that has ``setns()``-ed into the host namespace and runs an
asyncio loop there (the way the daemon runs), never in the machine's own namespace.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import subprocess
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from netd.core.model import DesiredState

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def sh(*args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=timeout)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")


class NetnsLoop:
    """An asyncio loop in a thread that lives in another network namespace."""

    def __init__(self, netns_path: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, args=(netns_path,), name="netns-loop", daemon=True)
        self._thread.start()
        self._ready.result(timeout=10)

    def _main(self, netns_path: str) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        asyncio.set_event_loop(self.loop)
        self._ready.set_result(None)
        self.loop.run_forever()
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        async def wrap() -> Any:
            return fn(*args)

        return self.run(wrap())

    def netns_ino(self) -> int:
        return int(self.call(lambda: os.stat("/proc/thread-self/ns/net").st_ino))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@dataclass
class Topology:
    tag: str
    host: str
    c1: str
    c2: str
    c3: str
    outside: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def namespaces(self) -> list[str]:
        return [self.host, self.c1, self.c2, self.c3, self.outside]

    def nft(self, *args: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.host, "nft", *args, check=check).stdout

    def ping(self, ns: str, addr: str) -> bool:
        return sh("ip", "netns", "exec", ns, "ping", "-n", "-q", "-c1", "-W1", addr, check=False).returncode == 0

    def set_br_netfilter(self, on: bool) -> None:
        sh("ip", "netns", "exec", self.host, "sysctl", "-qw", f"net.bridge.bridge-nf-call-iptables={int(on)}")
        sh("ip", "netns", "exec", self.host, "sysctl", "-qw", f"net.bridge.bridge-nf-call-ip6tables={int(on)}")

    def udp_echo_server(self) -> None:
        """In ``outside``: answer each UDP datagram on 10.90.100.2:7777 with the source address it came from."""
        code = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.bind(('10.90.100.2',7777))\n"
            "print('ready',flush=True)\n"
            "while True:\n"
            "    d,a=s.recvfrom(100)\n"
            "    s.sendto(a[0].encode(),a)\n"
        )
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.outside, sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def source_seen_by_outside(self, ns: str) -> str | None:
        """Send one datagram from ``ns`` to the echo server; the address it saw, or None if nothing came back."""
        code = (
            "import socket\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1.5)\n"
            "s.sendto(b'x',('10.90.100.2',7777))\n"
            "try: print(s.recv(100).decode())\n"
            "except OSError: print('')\n"
        )
        out = sh("ip", "netns", "exec", ns, sys.executable, "-c", code).stdout.strip()
        return out or None


def build_topology(t: Topology) -> None:
    for ns in t.namespaces:
        sh("ip", "netns", "add", ns)
    h = ["ip", "-n", t.host]
    sh(*h, "link", "set", "lo", "up")
    for br, gw in (("br-a", "10.90.1.1/24"), ("br-b", "10.90.2.1/24")):
        sh(*h, "link", "add", br, "type", "bridge")
        sh(*h, "addr", "add", gw, "dev", br)
        sh(*h, "link", "set", br, "up")
    for ns, br, ip, gw, port in (
        (t.c1, "br-a", "10.90.1.2/24", "10.90.1.1", "vc1"),
        (t.c2, "br-a", "10.90.1.3/24", "10.90.1.1", "vc2"),
        (t.c3, "br-b", "10.90.2.2/24", "10.90.2.1", "vc3"),
    ):
        sh(*h, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh(*h, "link", "set", port, "master", br)
        sh(*h, "link", "set", port, "up")
        c = ["ip", "-n", ns]
        sh(*c, "link", "set", "lo", "up")
        sh(*c, "addr", "add", ip, "dev", "eth0")
        sh(*c, "link", "set", "eth0", "up")
        sh(*c, "route", "add", "default", "via", gw)
    sh(*h, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", t.outside)
    sh(*h, "addr", "add", "10.90.100.1/24", "dev", "vout")
    sh(*h, "link", "set", "vout", "up")
    o = ["ip", "-n", t.outside]
    sh(*o, "link", "set", "lo", "up")
    sh(*o, "addr", "add", "10.90.100.2/24", "dev", "eth0")
    sh(*o, "link", "set", "eth0", "up")
    sh(*o, "route", "add", "10.90.0.0/16", "via", "10.90.100.1")
    sh("ip", "netns", "exec", t.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def teardown_topology(t: Topology) -> None:
    for p in t.procs:
        p.kill()
        p.wait(timeout=5)
    for ns in t.namespaces:
        sh("ip", "netns", "del", ns, check=False)


def dual_stack_state() -> DesiredState:
    """Four dual-stack networks, one of each kind the rule builder treats differently."""
    from ipaddress import ip_network

    from netd.core.model import IpamConfig, Network

    kinds: list[dict[str, bool]] = [{}, {"internal": True}, {"icc": False}, {"masquerade": False}]
    nets = [
        Network(
            id=f"n{i}",
            name=f"n{i}",
            bridge=f"br-{i}",
            enable_ipv6=True,
            ipam=[
                IpamConfig(subnet=ip_network(f"10.91.{i}.0/24")),
                IpamConfig(subnet=ip_network(f"fd00:91:{i}::/64")),
            ],
            **kw,
        )
        for i, kw in enumerate(kinds)
    ]
    return DesiredState(networks={n.name: n for n in nets})
