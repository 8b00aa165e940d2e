"""netd-ctl against a fake netd on a real Unix socket: exit codes, messages, rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netdctl_fake import FakeNetd

from netd.cli import client
from netd.cli.main import main

STATUS = {
    "version": "0.1.0",
    "networks": 2,
    "endpoints": 5,
    "netns": 3,
    "firewall": {"backend": "nftables", "reason": "libnftables available"},
    "reconcile": {"last": "2026-05-09T07:35:25Z", "changes": 0, "errors": 0, "repairs": 1},
    "state_file": "/var/lib/netd/state.json",
}

NETWORKS = [
    {
        "Name": "my-net",
        "Id": "f2de39df4171b0dc801e8002d1d999b77256983dfc63041c0f34030aa3977566",
        "Driver": "bridge",
        "Internal": False,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "172.30.0.0/24", "Gateway": "172.30.0.1"}]},
    },
    {
        "Name": "db",
        "Id": "0123456789abcdef0123",
        "Driver": "macvlan",
        "Internal": True,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24"}, {"Subnet": "fd00:9::/64"}]},
    },
]


def run(capsys: pytest.CaptureFixture[str], fake: FakeNetd, *argv: str) -> tuple[int, str, str]:
    code = main(["--socket", fake.socket_path, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_status_human_output_is_aligned_and_flattened(
    fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_netd.answer("GET", "/v1/status", STATUS)
    code, out, err = run(capsys, fake_netd, "status")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "version:           0.1.0",
        "networks:          2",
        "endpoints:         5",
        "netns:             3",
        "firewall.backend:  nftables",
        "firewall.reason:   libnftables available",
        "reconcile.last:    2026-05-09T07:35:25Z",
        "reconcile.changes: 0",
        "reconcile.errors:  0",
        "reconcile.repairs: 1",
        "state_file:        /var/lib/netd/state.json",
    ]
    req = fake_netd.requests[0]
    assert (req.method, req.path, req.headers["connection"], req.headers["host"]) == (
        "GET",
        "/v1/status",
        "close",
        "localhost",
    )


def test_status_json(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer("GET", "/v1/status", STATUS)
    code, out, _ = run(capsys, fake_netd, "status", "--format", "json")
    assert code == 0
    assert json.loads(out) == STATUS
    assert out.startswith('{\n    "version"')


def test_chunked_response(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer("GET", "/v1/status", STATUS, chunked=True)
    code, out, _ = run(capsys, fake_netd, "status", "--format", "json")
    assert code == 0
    assert json.loads(out) == STATUS


def test_response_without_length_is_read_to_eof(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer_raw("POST", "/v1/reconcile", b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"changes": 7}')
    code, out, _ = run(capsys, fake_netd, "reconcile")
    assert (code, out) == (0, "7\n")


def test_network_ls_table(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer("GET", "/v1/networks", NETWORKS)
    code, out, err = run(capsys, fake_netd, "network", "ls")
    assert (code, err) == (0, "")
    assert out == (
        "NETWORK ID     NAME     DRIVER    SCOPE   SUBNET                    INTERNAL\n"
        "0123456789ab   db       macvlan   local   10.9.0.0/24,fd00:9::/64   true\n"
        "f2de39df4171   my-net   bridge    local   172.30.0.0/24             false\n"
    )


def test_network_ls_quiet_and_json(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer("GET", "/v1/networks", NETWORKS)
    assert run(capsys, fake_netd, "network", "ls", "-q")[1] == "0123456789ab\nf2de39df4171\n"
    assert run(capsys, fake_netd, "network", "ls", "-q", "--no-trunc")[1].splitlines()[1] == NETWORKS[0]["Id"]
    assert json.loads(run(capsys, fake_netd, "network", "ls", "--format", "json")[1]) == NETWORKS


def test_network_create_prints_id_and_sends_body(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer("POST", "/v1/networks", {"Id": "abc123", "Warning": ""}, status=201)
    code, out, _ = run(capsys, fake_netd, "network", "create", "--subnet", "172.30.0.0/24", "my-net")
    assert (code, out) == (0, "abc123\n")
    req = fake_netd.requests[0]
    assert req.headers["content-type"] == "application/json"
    assert req.body["Name"] == "my-net"
    assert req.body["IPAM"]["Config"] == [{"Subnet": "172.30.0.0/24"}]


def test_server_4xx_is_one_line_on_stderr_exit_1(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    message = 'network "my-net": subnet 10.0.0.0/24 overlaps network "db" (10.0.0.0/16)'
    fake_netd.answer("POST", "/v1/networks", {"error": {"code": "conflict", "message": message}}, status=409)
    code, out, err = run(capsys, fake_netd, "network", "create", "--subnet", "10.0.0.0/24", "my-net")
    assert (code, out, err) == (1, "", f"netd-ctl: {message}\n")


def test_server_5xx_without_json_still_one_line(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer_raw(
        "GET", "/v1/status", b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 14\r\n\r\nboom\nTraceback"
    )
    code, _, err = run(capsys, fake_netd, "status")
    assert code == 1
    assert err == "netd-ctl: netd answered HTTP 500 Internal Server Error: boom\n"


def test_rm_keeps_going_and_fails_at_the_end(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer("DELETE", "/v1/networks/a", None, status=204)
    fake_netd.answer("DELETE", "/v1/networks/c", None, status=204)
    fake_netd.answer(
        "DELETE", "/v1/networks/b", {"error": {"code": "not_found", "message": 'network "b" not found'}}, 404
    )
    code, out, err = run(capsys, fake_netd, "network", "rm", "a", "b", "c")
    assert (code, out, err) == (1, "a\nc\n", 'netd-ctl: network "b" not found\n')
    assert [r.path for r in fake_netd.requests] == ["/v1/networks/a", "/v1/networks/b", "/v1/networks/c"]


def test_inspect_prints_a_json_array(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer("GET", "/v1/networks/my-net", NETWORKS[0])
    fake_netd.answer("GET", "/v1/networks/db", NETWORKS[1])
    code, out, _ = run(capsys, fake_netd, "network", "inspect", "my-net", "db")
    assert code == 0
    assert json.loads(out) == NETWORKS
    assert out.startswith('[\n    {\n        "Name"')


def test_connect_prints_the_answer(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    answer = {"EndpointID": "e1", "IPv4Address": "172.30.0.10/24", "Resolver": "172.30.0.1"}
    fake_netd.answer("POST", "/v1/networks/my-net/connect", answer)
    code, out, _ = run(
        capsys, fake_netd, "network", "connect", "--ip", "172.30.0.10", "-p", "8080:80", "my-net", "web"
    )
    assert code == 0
    assert json.loads(out) == answer
    assert fake_netd.requests[0].body["Ports"] == [{"HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"}]


def test_disconnect_and_netns(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer("POST", "/v1/networks/n/disconnect", None, status=204)
    fake_netd.answer("POST", "/v1/netns", {"Name": "web", "Path": "/run/netns/web"}, status=201)
    fake_netd.answer(
        "GET",
        "/v1/netns",
        [
            {"Name": "web", "Path": "/run/netns/web", "Endpoints": [{}, {}]},
            {"Name": "db", "Path": "/run/netns/db"},
        ],
    )
    assert run(capsys, fake_netd, "network", "disconnect", "n", "web") == (0, "", "")
    assert run(capsys, fake_netd, "netns", "create", "web") == (0, "web\n", "")
    assert run(capsys, fake_netd, "netns", "ls")[1] == (
        "NAME   PATH             ENDPOINTS\ndb     /run/netns/db    0\nweb    /run/netns/web   2\n"
    )


def test_port_lists_like_docker_port(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    ports = [
        {"HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"},
        {"HostIp": "127.0.0.1", "HostPort": 5353, "ContainerPort": 53, "Proto": "udp"},
        {"HostIp": "::1", "HostPort": 8443, "ContainerPort": 443, "Proto": "tcp"},
    ]
    fake_netd.answer(
        "GET", "/v1/netns/web", {"Name": "web", "Endpoints": [{"Ports": ports[:2]}, {"Ports": ports[2:]}]}
    )
    code, out, _ = run(capsys, fake_netd, "port", "web")
    assert code == 0
    assert out == "53/udp -> 127.0.0.1:5353\n80/tcp -> 0.0.0.0:8080\n443/tcp -> [::1]:8443\n"
    assert run(capsys, fake_netd, "port", "web", "80")[1] == "0.0.0.0:8080\n"


def test_missing_socket_exit_3_with_hint(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(short_tmp / "absent.sock")
    assert main(["--socket", path, "status"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("netd-ctl: cannot connect to netd: no such socket")
    assert f"is netd running? (systemctl status netd) socket: {path}" in err


def test_refused_socket_exit_3(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    path = str(short_tmp / "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound but never listening: what a crashed daemon leaves behind
    stale.close()
    assert main(["--socket", path, "status"]) == 3
    assert "connection refused" in capsys.readouterr().err


def test_garbage_answer_exit_3(fake_netd: FakeNetd, capsys: pytest.CaptureFixture[str]) -> None:
    fake_netd.answer_raw("GET", "/v1/status", b"SSH-2.0-OpenSSH\r\n\r\n")
    assert run(capsys, fake_netd, "status")[0] == 3
    fake_netd.answer_raw("GET", "/v1/status", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!")
    code, _, err = run(capsys, fake_netd, "status")
    assert code == 3
    assert err.startswith("netd-ctl: netd sent a response that is not JSON")


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra", b"{}"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n", b"{}"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)
def test_parse_response(raw: bytes, body: bytes) -> None:
    assert client.parse_response(raw).body == body


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
    ],
)
def test_parse_response_rejects(raw: bytes) -> None:
    with pytest.raises(client.ProtocolError):
        client.parse_response(raw)


def test_entry_point_subprocess(fake_netd: FakeNetd) -> None:
    fake_netd.answer("GET", "/v1/status", STATUS)
    exe = Path(sys.executable).with_name("netd-ctl")
    if not exe.exists():
        pytest.skip(f"{exe} not installed")
    env = {k: v for k, v in os.environ.items() if k != "NETD_SOCKET"}
    started = time.monotonic()
    proc = subprocess.run(
        [str(exe), "--socket", fake_netd.socket_path, "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "firewall.backend:  nftables" in proc.stdout
    assert elapsed < 2.0, f"netd-ctl status took {elapsed:.3f} s"


def test_cli_imports_nothing_heavy() -> None:
    code = (
        "import sys, netd.cli.main; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pydantic', 'pyroute2', 'aiohttp', 'structlog', 'http', 'email', 'typing', 'asyncio'} "
        "or (m.startswith('netd.') and not m.startswith('netd.cli'))); print(','.join(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""
