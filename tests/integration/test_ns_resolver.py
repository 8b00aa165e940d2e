"""Issue 12.9: names on macvlan networks, from a resolver inside each endpoint's namespace (127.0.0.11:53).

macvlan endpoints cannot reach any address of the host, so the gateway resolver of bridge networks cannot serve
them; netd opens 127.0.0.11:53 inside their namespaces, as Docker's embedded resolver.  A real daemon in a test
host namespace whose "NIC" ``lan0`` is a veth to an underlay namespace; the upstream is a fake DNS server in the
host's "outside" namespace.  The sockets are read back from the kernel (``ss`` inside the namespace).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netdtest import Host, foreign_netns, in_ns, running_host
from test_dns import dig, fake_upstream
from test_macvlan_network import Underlay

NS_DNS = "127.0.0.11"
DEADLINE = 15.0  # generous under load


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Host]:
    cfg = f'etc_netns_dir = "{tmp_path / "etc-netns"}"\ndns = ["10.255.0.2"]\nreconcile_interval = 300.0'
    with running_host(tmp_path, config=cfg) as host, fake_upstream(host):
        under = Underlay(host)
        try:
            under.wire()
            host.api.ok(
                "POST",
                "/v1/networks",
                {
                    "Name": "mv",
                    "Driver": "macvlan",
                    "IPAM": {"Config": [{"Subnet": "10.86.0.0/24", "Gateway": "10.86.0.1"}]},
                    "Options": {"parent": "lan0"},
                },
            )
            yield host
        finally:
            under.cleanup()


def _attach(host: Host, net: str, ns: str, *aliases: str) -> dict[str, Any]:
    if ns not in [n["Name"] for n in host.api.ok("GET", "/v1/netns")]:
        host.api.ok("POST", "/v1/netns", {"Name": ns})
    body = {"Netns": ns, "EndpointConfig": {"Aliases": list(aliases)}}
    return host.api.ok("POST", f"/v1/networks/{net}/connect", body)  # type: ignore[no-any-return]


def _ip(ep: dict[str, Any]) -> str:
    return str(ep["IPv4Address"]).split("/")[0]


def _listening(path: str) -> list[str]:
    """The sockets on port 53 inside the namespace, as the kernel has them ("udp 127.0.0.11:53", ...)."""
    out = in_ns(path, "ss", "-Hlntu", "sport", "=", ":53").stdout
    return sorted(f"{line.split()[0]} {line.split()[4]}" for line in out.splitlines() if line.strip())


def _getent(host: Host, ns: str, name: str) -> subprocess.CompletedProcess[str]:
    """getent inside the namespace with netd's resolv.conf for it in place (as ``ip netns exec`` does)."""
    resolv = host.root / "etc-netns" / ns / "resolv.conf"
    script = f'mount --bind "$1" /etc/resolv.conf && exec getent hosts {name}'
    return in_ns(host.ns(ns), "unshare", "-m", "sh", "-c", script, "sh", str(resolv), check=False)


def test_names_on_a_macvlan_network(lan: Host) -> None:
    h = lan
    h.api.ok("POST", "/v1/networks", {"Name": "br", "IPAM": {"Config": [{"Subnet": "172.31.7.0/24"}]}})
    m1 = _attach(h, "mv", "m1")
    m2 = _attach(h, "mv", "m2", "www")
    b2 = _attach(h, "br", "b2")
    m1b = _attach(h, "br", "m1")  # m1 is on both: its resolver knows both networks' names, as Docker's
    assert m1["Resolver"] == NS_DNS and m1b["Resolver"] == "172.31.7.1"
    ns = h.ns("m1")
    assert _listening(ns) == ["tcp 127.0.0.11:53", "udp 127.0.0.11:53"]
    assert _listening(h.ns("b2")) == []  # a bridge-only namespace has none: its gateway resolver serves it
    assert dig(ns, NS_DNS, "m2") == ("NOERROR", [_ip(m2)])
    assert dig(ns, NS_DNS, "www") == ("NOERROR", [_ip(m2)])
    assert dig(ns, NS_DNS, "+tcp", "WWW.") == ("NOERROR", [_ip(m2)])
    assert dig(ns, NS_DNS, "b2") == ("NOERROR", [_ip(b2)])
    assert dig(ns, NS_DNS, "-x", _ip(m2)) == ("NOERROR", ["m2."])
    assert dig(ns, NS_DNS, "nobody")[0] == "NXDOMAIN"
    assert dig(ns, NS_DNS, "hello.example.test") == ("NOERROR", ["192.0.2.5"])  # forwarded upstream
    assert dig(h.ns("m2"), NS_DNS, "m1") == ("NOERROR", [_ip(m1)])
    assert dig(h.ns("m2"), NS_DNS, "b2")[0] == "NXDOMAIN"  # m2 is not on br
    # resolv.conf points at it (the namespace's own resolver wins over the first connected network's)
    resolv = (h.root / "etc-netns" / "m1" / "resolv.conf").read_text()
    assert "nameserver 127.0.0.11" in resolv.splitlines()
    r = _getent(h, "m1", "www")
    assert r.returncode == 0 and r.stdout.split()[0] == _ip(m2), r
    # a name leaves at once; the last macvlan endpoint leaving closes the sockets
    h.api.ok("POST", "/v1/networks/mv/disconnect", {"Netns": "m2"})
    assert dig(ns, NS_DNS, "www")[0] == "NXDOMAIN"
    h.api.ok("POST", "/v1/networks/mv/disconnect", {"Netns": "m1"})
    assert _listening(ns) == []
    resolv = (h.root / "etc-netns" / "m1" / "resolv.conf").read_text()
    assert "nameserver 172.31.7.1" in resolv.splitlines()
    assert dig(ns, "172.31.7.1", "b2") == ("NOERROR", [_ip(b2)])
    assert '"ns_resolver_failed"' not in h.log_text()


def test_restart_reopens_the_resolvers(lan: Host) -> None:
    h = lan
    m1 = _attach(h, "mv", "m1")
    _attach(h, "mv", "m2")
    assert dig(h.ns("m2"), NS_DNS, "m1") == ("NOERROR", [_ip(m1)])
    # m2 under a second spelling (its path) on a second macvlan network: one resolver, both networks' names
    body = {"Name": "mv2", "Driver": "macvlan", "Options": {"parent": "lan0"}}
    h.api.ok("POST", "/v1/networks", {**body, "IPAM": {"Config": [{"Subnet": "10.87.0.0/24"}]}})
    p2 = h.api.ok(
        "POST", "/v1/networks/mv2/connect", {"NetnsPath": h.ns("m2"), "EndpointConfig": {"Aliases": ["p2"]}}
    )
    assert _listening(h.ns("m2")) == ["tcp 127.0.0.11:53", "udp 127.0.0.11:53"]
    assert dig(h.ns("m2"), NS_DNS, "p2") == ("NOERROR", [_ip(p2)])
    assert dig(h.ns("m2"), NS_DNS, "m1") == ("NOERROR", [_ip(m1)])
    h.stop()
    assert _listening(h.ns("m2")) == []  # they are the daemon's sockets
    h.start()
    assert _listening(h.ns("m2")) == ["tcp 127.0.0.11:53", "udp 127.0.0.11:53"]
    assert dig(h.ns("m2"), NS_DNS, "m1") == ("NOERROR", [_ip(m1)])
    h.api.ok("DELETE", "/v1/netns/m1")
    assert dig(h.ns("m2"), NS_DNS, "m1")[0] == "NXDOMAIN"


def _link_exists(host: Host, ifname: str) -> bool:
    return in_ns(host.path, "ip", "link", "show", ifname, check=False).returncode == 0


@contextlib.contextmanager
def _process_netns() -> Iterator[str]:
    """A container's namespace: held by one process only (``unshare --net``); it exits when the block ends."""
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 300"])
    try:
        path = f"/proc/{proc.pid}/ns/net"
        own = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 5
        while (os.stat(path).st_ino == own or "UP" not in in_ns(path, "ip", "link", "show", "lo").stdout) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.02)
        yield path
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("kind", ["named", "process"])
def test_a_deleted_namespace_is_not_kept_alive_by_its_resolver(lan: Host, kind: str) -> None:
    """The resolver's sockets would keep a namespace deleted under netd alive (``ip netns del``, or its last
    process exiting), and with it its links and its endpoints.  The namespace is also on a bridge network: its
    veth's host side going proves the kernel freed it; the full-pass timer is 300 s, so only the resolver's
    watch can have done it."""
    h = lan
    h.api.ok("POST", "/v1/networks", {"Name": "br", "IPAM": {"Config": [{"Subnet": "172.31.7.0/24"}]}})
    with foreign_netns("r") if kind == "named" else _process_netns() as path:
        body = {"NetnsPath": path, "EndpointConfig": {"Aliases": ["ext"]}}
        ep = h.api.ok("POST", "/v1/networks/mv/connect", body)
        veth = h.api.ok("POST", "/v1/networks/br/connect", {"NetnsPath": path})
        m1 = _attach(h, "mv", "m1")
        assert _listening(path) == ["tcp 127.0.0.11:53", "udp 127.0.0.11:53"]
        assert dig(path, NS_DNS, "m1") == ("NOERROR", [_ip(m1)])
        assert dig(h.ns("m1"), NS_DNS, "ext") == ("NOERROR", [_ip(ep)])
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        nets = [h.api.ok("GET", f"/v1/networks/{n}")["Containers"] for n in ("mv", "br")]
        left = [c["Name"] for containers in nets for c in containers.values()]
        if left == ["m1"] and not _link_exists(h, veth["HostInterface"]):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"namespace {path} still alive or its endpoints still there {DEADLINE} s after its deletion")
    assert dig(h.ns("m1"), NS_DNS, "ext")[0] == "NXDOMAIN"
    assert '"ns_resolver_closed"' in h.log_text()


def test_port_53_taken_in_the_namespace_is_logged_and_others_work(lan: Host) -> None:
    """A process of the namespace already on *:53 (its own DNS server): the connect works (the data path does not
    need names), the log says why names do not resolve there and what to do, other namespaces are served."""
    h = lan
    h.api.ok("POST", "/v1/netns", {"Name": "busy"})
    hold = "import socket,time;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',53));"
    hold += "print('bound',flush=True);time.sleep(300)"
    proc = subprocess.Popen(
        ["nsenter", f"--net={h.ns('busy')}", "python3", "-c", hold], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "bound"
        busy = _attach(h, "mv", "busy")
        m1 = _attach(h, "mv", "m1")
        assert dig(h.ns("m1"), NS_DNS, "busy") == ("NOERROR", [_ip(busy)])
        assert _listening(h.ns("busy")) == ["udp 0.0.0.0:53"]  # only the namespace's own
        log = [line for line in h.log_text().splitlines() if '"ns_resolver_failed"' in line]
        assert len(log) == 1 and "busy" in log[0] and "port 53" in log[0], log
        assert _ip(m1)
    finally:
        proc.kill()
        proc.wait()
