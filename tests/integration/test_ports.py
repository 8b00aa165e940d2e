"""Published ports end to end (issue 4): real TCP and UDP through every path Docker users rely on.

Paths: from another host (the test host's "outside" namespace, through its uplink 10.255.0.1 / fd99:255::1),
from the host itself (127.0.0.1 and its uplink address), and hairpin (another endpoint of the same network
through the host address).  Each test runs once per firewall backend (the ``host`` fixture).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netdtest import Host, in_ns

ECHO = str(Path(__file__).resolve().parent / "portecho.py")


# ------------------------------------------------------------------------------------------------------- helpers


def dual_net(host: Host, name: str = "app", subnet: str = "172.29.1.0/24", v6: str = "fd00:29:1::/64") -> None:
    cfg = [{"Subnet": subnet}, {"Subnet": v6}]
    host.api.ok("POST", "/v1/networks", {"Name": name, "EnableIPv6": True, "IPAM": {"Config": cfg}})


def attach(host: Host, network: str, ns: str, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    if ns not in [n["Name"] for n in host.api.ok("GET", "/v1/netns")]:
        host.api.ok("POST", "/v1/netns", {"Name": ns})
    body = {"Netns": ns, "Ports": ports or []}
    return host.api.ok("POST", f"/v1/networks/{network}/connect", body)  # type: ignore[no-any-return]


def port(host_port: int, container_port: int, proto: str = "tcp", ip: str = "") -> dict[str, Any]:
    return {"HostIp": ip, "HostPort": host_port, "ContainerPort": container_port, "Proto": proto}


@contextlib.contextmanager
def echo_server(path: str, tag: str, *ports: int) -> Iterator[None]:
    proc = subprocess.Popen(
        ["nsenter", f"--net={path}", sys.executable, ECHO, "serve", tag, *map(str, ports)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read() if proc.stderr else line
        yield
    finally:
        proc.kill()
        proc.wait(5)


def send(path: str, proto: str, addr: str, p: int, tries: int = 3) -> str:
    """The echo answer ("" when none came), trying a few times (a first UDP packet may race a rule change)."""
    for _ in range(tries):
        r = in_ns(path, sys.executable, ECHO, "send", proto, addr, str(p), check=False)
        if r.returncode == 0:
            return r.stdout.strip()
        time.sleep(0.2)
    return ""


def reaches(path: str, proto: str, addr: str, p: int, tag: str = "web", tries: int = 3) -> bool:
    return send(path, proto, addr, p, tries).startswith(f"{tag}:")


def udp_conntrack(host: Host, p: int) -> str:
    """The host's conntrack entries for UDP to port ``p`` (read from the kernel with conntrack-tools)."""
    out = ""
    for fam in ("ipv4", "ipv6"):
        r = in_ns(host.path, "conntrack", "-L", "-f", fam, "-p", "udp", "--orig-port-dst", str(p), check=False)
        out += r.stdout
    return out


# ------------------------------------------------------------------------------------------------------- tests


def test_every_path_tcp_and_udp(host: Host) -> None:
    dual_net(host)
    web = attach(host, "app", "web", [port(8080, 80), port(8080, 80, "udp")])
    attach(host, "app", "peer")
    assert {(p["HostPort"], p["Proto"]) for p in web["Ports"]} == {(8080, "tcp"), (8080, "udp")}
    with echo_server(host.ns("web"), "web", 80):
        for proto in ("tcp", "udp"):
            # from another host, IPv4 and IPv6
            out = send(host.outside_path, proto, host.uplink_ip, 8080)
            assert out.startswith("web:80:"), (proto, out, host.log_text()[-2000:])
            assert out.split(":")[2] == host.outside_ip  # DNAT only: the client's own address arrives
            assert reaches(host.outside_path, proto, host.uplink_ip6, 8080)
            # from the host itself: loopback and its own address
            assert reaches(host.path, proto, "127.0.0.1", 8080), proto
            assert reaches(host.path, proto, host.uplink_ip, 8080), proto
            # hairpin: another endpoint of the network through the host address
            assert reaches(host.ns("peer"), proto, host.uplink_ip, 8080), proto
        # an unpublished port of the endpoint stays closed from outside
        assert not reaches(host.outside_path, "tcp", host.uplink_ip, 80)


def test_range_automatic_port_and_localhost_only(host: Host) -> None:
    dual_net(host)
    host.api.ok("POST", "/v1/netns", {"Name": "web"})
    publish = ["-p", "8000-8010:8000-8010", "-p", "80", "-p", "127.0.0.1:8090:81/udp"]
    host.ctl("network", "connect", *publish, "app", "web")
    ports = host.api.ok("GET", "/v1/netns/web")["Endpoints"][0]["Ports"]
    auto = [p for p in ports if p["ContainerPort"] == 80]
    assert len(ports) == 13 and len(auto) == 1
    picked = auto[0]["HostPort"]
    assert 49153 <= picked <= 60999  # the default published_port_range
    listing = host.ctl("port", "web").stdout
    assert f"80/tcp -> 0.0.0.0:{picked}" in listing, listing
    assert "81/udp -> 127.0.0.1:8090" in listing, listing
    inspect = json.loads(host.ctl("network", "inspect", "app").stdout)
    inspect = inspect[0] if isinstance(inspect, list) else inspect
    (container,) = inspect["Containers"].values()
    assert {"HostIp": "", "HostPort": picked, "ContainerPort": 80, "Proto": "tcp"} in container["Ports"]
    with echo_server(host.ns("web"), "web", 8000, 8005, 8010, 80, 81):
        for p in (8000, 8005, 8010):
            assert send(host.outside_path, "tcp", host.uplink_ip, p).startswith(f"web:{p}:")
        assert send(host.outside_path, "tcp", host.uplink_ip, picked).startswith("web:80:")
        # 127.0.0.1:8090 is the host's only
        assert send(host.path, "udp", "127.0.0.1", 8090).startswith("web:81:")
        assert not reaches(host.outside_path, "udp", host.uplink_ip, 8090)
        assert not reaches(host.path, "udp", host.uplink_ip, 8090)


def test_conflicts_and_internal_networks_change_nothing(host: Host) -> None:
    dual_net(host)
    host.api.ok("POST", "/v1/networks", {"Name": "priv", "Internal": True})
    attach(host, "app", "web", [port(8080, 80)])
    host.api.ok("POST", "/v1/netns", {"Name": "other"})
    before_state = host.api.ok("GET", "/v1/networks/app")
    before = host.kernel_snapshot()
    for ports, net, code, words in (
        ([port(8080, 90)], "app", 409, "netns 'web' on network 'app'"),
        ([port(8080, 90, ip="127.0.0.1")], "app", 409, "already published"),  # overlaps web's wildcard
        ([port(9000, 90), port(9000, 91)], "app", 409, "this request"),
        ([port(9001, 90, ip="fd99:255::1")], "priv", 400, "internal"),
        ([port(70000, 90)], "app", 400, "0-65535"),
    ):
        status, body = host.api.request("POST", f"/v1/networks/{net}/connect", {"Netns": "other", "Ports": ports})
        assert status == code, body
        assert body["error"]["field"] == "publish" and words in body["error"]["message"], body
    assert host.kernel_snapshot() == before
    assert host.api.ok("GET", "/v1/networks/app") == before_state
    # UDP on the same number is another port; so is another host address than web's wildcard... of IPv6 only
    attach(host, "app", "other", [port(8080, 90, "udp")])


def test_disconnect_removes_mapping_and_its_udp_conntrack(host: Host) -> None:
    dual_net(host)
    attach(host, "app", "web", [port(8080, 80), port(5353, 53, "udp")])
    with echo_server(host.ns("web"), "web", 80, 53):
        assert reaches(host.outside_path, "tcp", host.uplink_ip, 8080)
        assert reaches(host.outside_path, "udp", host.uplink_ip, 5353)
        assert "dport=5353" in udp_conntrack(host, 5353)
        host.api.ok("POST", "/v1/networks/app/disconnect", {"Netns": "web"})
        assert "dport=5353" not in udp_conntrack(host, 5353), udp_conntrack(host, 5353)
        assert not reaches(host.outside_path, "tcp", host.uplink_ip, 8080, tries=1)
        assert not reaches(host.outside_path, "udp", host.uplink_ip, 5353, tries=1)


def test_changed_udp_mapping_is_not_black_holed(host: Host) -> None:
    """A UDP client that keeps one socket (one conntrack entry) follows the port when it moves to another
    endpoint: the entry of the old mapping is flushed (Docker's long-standing bug)."""
    dual_net(host)
    attach(host, "app", "a", [port(5000, 53, "udp")])
    attach(host, "app", "b")
    with echo_server(host.ns("a"), "a", 53), echo_server(host.ns("b"), "b", 53):
        code = (
            "import socket,sys,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',40000)); s.settimeout(1)\n"
            "for line in sys.stdin:\n"
            f" s.sendto(b'x',('{host.uplink_ip}',5000))\n"
            " try: print(s.recv(100).decode().split(':')[0], flush=True)\n"
            " except OSError: print('none', flush=True)\n"
        )
        client = subprocess.Popen(
            ["nsenter", f"--net={host.outside_path}", sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert client.stdin is not None and client.stdout is not None

            def ask() -> str:
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write("go\n")
                client.stdin.flush()
                return client.stdout.readline().strip()

            assert ask() == "a"
            host.api.ok("POST", "/v1/networks/app/disconnect", {"Netns": "a"})
            host.api.ok("POST", "/v1/networks/app/disconnect", {"Netns": "b"})
            attach(host, "app", "b", [port(5000, 53, "udp")])
            # same source port, so the same conntrack entry: without the flush it would keep pointing at a (each
            # ask refreshes it); a first packet may be lost while b's new link comes up, hence a few asks
            answers = [ask() for _ in range(5)]
            assert "b" in answers and "a" not in answers, answers
        finally:
            client.kill()
            client.wait(5)


def test_ports_come_back_after_reboot(host: Host) -> None:
    dual_net(host)
    attach(host, "app", "web", [port(8080, 80), port(8081, 81, "udp")])
    host.reboot()
    host.start()
    with echo_server(host.ns("web"), "web", 80, 81):
        assert reaches(host.outside_path, "tcp", host.uplink_ip, 8080), host.log_text()[-3000:]
        assert reaches(host.outside_path, "udp", host.uplink_ip, 8081)
        assert reaches(host.path, "tcp", "127.0.0.1", 8080)
