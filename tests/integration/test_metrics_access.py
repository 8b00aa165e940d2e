"""Who may read /metrics (issue 11.11): its labels carry network and namespace names, so an operator can serve
it on a Unix socket (0660, the API socket's group) instead of 127.0.0.1, and/or require a bearer token."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest
from netdtest import UDSClient, in_ns, running_host

TCP_SCRAPE = """
import sys, urllib.request, urllib.error
req = urllib.request.Request("http://127.0.0.1:9465/metrics")
if len(sys.argv) > 1:
    req.add_header("Authorization", sys.argv[1])
try:
    r = urllib.request.urlopen(req, timeout=10)
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.headers.get("WWW-Authenticate"))
except urllib.error.URLError as e:
    print("refused"); print(e.reason)
"""


def tcp_scrape(ns: str, auth: str | None = None) -> tuple[str, str]:
    out = in_ns(ns, sys.executable, "-c", TCP_SCRAPE, *([auth] if auth else [])).stdout
    first, _, rest = out.partition("\n")
    return first, rest


def uds_scrape(path: Path, auth: str | None = None) -> tuple[int, str]:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        extra = f"Authorization: {auth}\r\n" if auth else ""
        s.sendall(f"GET /metrics HTTP/1.0\r\nHost: netd\r\n{extra}\r\n".encode())
        resp = b"".join(iter(lambda: s.recv(65536), b""))
    head, _, body = resp.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


def test_metrics_on_a_unix_socket_only(tmp_path: Path) -> None:
    with running_host(tmp_path, start=False) as host:
        sock = host.run_dir / "metrics.sock"
        host.extra_config = f'[metrics]\nlisten = "unix:{sock}"'
        host.start()
        host.api.ok(
            "POST", "/v1/networks", {"Name": "secret-net", "IPAM": {"Config": [{"Subnet": "10.61.0.0/24"}]}}
        )
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o660 and stat.S_ISSOCK(os.lstat(sock).st_mode)
        status, body = uds_scrape(sock)
        assert status == 200 and 'network="secret-net"' in body
        assert tcp_scrape(host.path)[0] == "refused"  # nothing on 127.0.0.1:9465
        assert host.api.ok("GET", "/v1/status")["metrics"] == f"unix:{sock}"
        assert not host.api.ok("GET", "/v1/status")["degraded"]


def test_metrics_token(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    with running_host(tmp_path, config=f'[metrics]\ntoken_file = "{token_file}"') as host:
        code, challenge = tcp_scrape(host.path)
        assert code == "401" and challenge.startswith("Bearer")
        assert tcp_scrape(host.path, "Bearer wrong")[0] == "401"
        assert tcp_scrape(host.path, "Basic czNjcmV0LXRva2Vu")[0] == "401"
        code, body = tcp_scrape(host.path, "Bearer s3cret-token")
        assert code == "200" and "netd_ready 1.0" in body
        # the API socket's /metrics is guarded by the socket's own permissions, as before
        assert "netd_ready" in UDSClient(host.run_dir / "netd.sock").text("/metrics")


def test_metrics_token_on_a_unix_socket_and_an_unusable_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text("tok\n")
    with running_host(tmp_path, start=False) as host:
        sock = host.run_dir / "metrics.sock"
        host.extra_config = f'[metrics]\nlisten = "unix:{sock}"\ntoken_file = "{token_file}"'
        host.start()
        assert uds_scrape(sock)[0] == 401
        assert uds_scrape(sock, "Bearer tok")[0] == 200
        host.stop()
        token_file.write_text("")  # empty: netd serves no metrics rather than unprotected ones, and says why
        host.start()
        with pytest.raises(ConnectionRefusedError):  # the file left by the last run has no listener
            uds_scrape(sock)
        degraded = host.api.ok("GET", "/v1/status")["degraded"]
        assert any("token_file" in d and "empty" in d for d in degraded), degraded
