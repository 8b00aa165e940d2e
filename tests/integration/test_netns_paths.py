"""Namespace paths and named netns: netd never blocks on them, never touches what is not its own (issue 11 5-6).

Every namespace here is made by the test (``ip netns add ndt-...``) or by the test's netd; the one exception is
``/proc/1/ns/net``, which is only *passed* to netd to check that it is refused (nothing is created there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netdtest import Host, foreign_netns, in_ns, ping, reach, running_host, sh

NA = {"Name": "na", "IPAM": {"Config": [{"Subnet": "172.30.50.0/24"}]}}
NB = {"Name": "nb", "IPAM": {"Config": [{"Subnet": "172.30.51.0/24"}]}}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with running_host(tmp_path) as h:
        h.api.ok("POST", "/v1/networks", NA)
        h.api.ok("POST", "/v1/networks", NB)
        yield h


@pytest.fixture
def test_ns() -> Iterator[str]:
    with foreign_netns() as path:
        yield path


def _snapshot(host: Host) -> tuple[str, str, bytes]:
    routes = in_ns(host.path, "ip", "route").stdout + in_ns(host.path, "ip", "-6", "route").stdout
    return host.kernel_snapshot(), routes, host.state_bytes()


def _links(path: str) -> dict[str, str]:
    """ifname -> 'kind alias' of the links in a namespace."""
    out = {}
    for line in in_ns(path, "ip", "-o", "-d", "link").stdout.splitlines():
        name = line.split(": ", 2)[1].split("@")[0]
        out[name] = line
    return out


def _status_while(host: Host, body: dict[str, Any]) -> tuple[tuple[int, Any], int]:
    """POST a connect from a thread and, while it is in flight, GET /v1/status: both must answer."""
    result: dict[str, tuple[int, Any]] = {}
    t = threading.Thread(
        target=lambda: result.setdefault("r", host.api.request("POST", "/v1/networks/na/connect", body)),
        daemon=True,
    )
    t.start()
    status, _ = host.api.request("GET", "/v1/status")
    t.join(30)
    assert not t.is_alive(), "the connect never answered"
    return result["r"], status


def test_fifo_path_is_refused_without_blocking(host: Host, tmp_path: Path) -> None:
    fifo = tmp_path / "ns-fifo"
    os.mkfifo(fifo)
    before = _snapshot(host)
    try:
        (got, err), status = _status_while(host, {"NetnsPath": str(fifo)})
    finally:  # on a daemon that blocked in open(): give it a writer so it (and the test) can end
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert status == 200
    assert got == 400, err
    assert err["error"]["field"] == "NetnsPath"
    assert "is a FIFO, not a network namespace" in err["error"]["message"]
    assert _snapshot(host) == before


@pytest.mark.parametrize("kind", ["regular file", "directory", "socket"])
def test_non_namespace_files_are_refused(host: Host, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "not-a-ns"
    sock = None
    if kind == "regular file":
        path.write_text("x")
    elif kind == "directory":
        path.mkdir()
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
    before = _snapshot(host)
    try:
        got, err = host.api.request("POST", "/v1/networks/na/connect", {"NetnsPath": str(path)})
    finally:
        if sock is not None:
            sock.close()
    assert got == 400, err
    assert err["error"]["field"] == "NetnsPath"
    assert f"is a {kind}, not a network namespace" in err["error"]["message"]
    assert _snapshot(host) == before


@pytest.mark.parametrize("which", ["netd's by name", "netd's by pid", "pid 1"])
def test_netds_own_and_the_init_namespace_are_refused(host: Host, which: str) -> None:
    assert host.proc is not None
    path = {
        "netd's by name": host.path,
        "netd's by pid": f"/proc/{host.proc.pid}/ns/net",
        "pid 1": "/proc/1/ns/net",
    }
    machine_links = sh("ip", "-o", "link").stdout
    machine_routes = sh("ip", "route").stdout
    before = _snapshot(host)
    got, err = host.api.request("POST", "/v1/networks/na/connect", {"NetnsPath": path[which]})
    assert got == 400, err
    assert err["error"]["field"] == "NetnsPath"
    msg = err["error"]["message"]
    if which == "pid 1" and "Permission denied" in msg:  # PID 1 holds capabilities netd lacks: unopenable
        assert "/proc/1/ns/net cannot be opened (Permission denied)" in msg
    else:
        own = "the host's initial network namespace" if which == "pid 1" else "is netd's own network namespace"
        assert own in msg
        assert "would move the host's interfaces" in msg
    assert _snapshot(host) == before
    assert sh("ip", "-o", "link").stdout == machine_links
    assert sh("ip", "route").stdout == machine_routes


def test_a_foreign_eth0_is_kept(host: Host, test_ns: str) -> None:
    sh("ip", "-n", Path(test_ns).name, "link", "add", "eth0", "type", "veth", "peer", "name", "theirs")
    foreign = _links(test_ns)["eth0"]
    ep = host.api.ok("POST", "/v1/networks/na/connect", {"NetnsPath": test_ns})
    assert ep["Interface"] == "eth1"
    links = _links(test_ns)
    assert links["eth0"] == foreign  # not deleted, not recreated, not renamed
    assert "eth1" in links
    assert reach(test_ns, "172.30.50.1")
    addr = ep["IPv4Address"].split("/")[0]
    assert ping(host.path, addr)
    host.api.ok("POST", "/v1/networks/na/disconnect", {"NetnsPath": test_ns})
    links = _links(test_ns)
    assert links["eth0"] == foreign
    assert "eth1" not in links


def test_a_foreign_eth1_in_a_netd_namespace_is_kept(host: Host) -> None:
    host.api.ok("POST", "/v1/netns", {"Name": "n1"})
    ns = host.ns("n1")
    assert host.api.ok("POST", "/v1/networks/na/connect", {"Netns": "n1"})["Interface"] == "eth0"
    in_ns(ns, "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "theirs")
    foreign = _links(ns)["eth1"]
    ep = host.api.ok("POST", "/v1/networks/nb/connect", {"Netns": "n1"})
    assert ep["Interface"] == "eth2"
    assert _links(ns)["eth1"] == foreign
    assert reach(ns, "172.30.51.1")
    host.api.ok("POST", "/v1/networks/nb/disconnect", {"Netns": "n1"})
    assert _links(ns)["eth1"] == foreign


def test_one_namespace_by_name_and_by_path(host: Host) -> None:
    host.api.ok("POST", "/v1/netns", {"Name": "n1"})
    a = host.api.ok("POST", "/v1/networks/na/connect", {"Netns": "n1"})
    b = host.api.ok("POST", "/v1/networks/nb/connect", {"NetnsPath": host.ns("n1")})
    assert {a["Interface"], b["Interface"]} == {"eth0", "eth1"}
    # the same namespace twice on one network, through the other spelling
    before = _snapshot(host)
    got, err = host.api.request("POST", "/v1/networks/na/connect", {"NetnsPath": host.ns("n1")})
    assert got == 409, err
    assert "already connected to network 'na'" in err["error"]["message"]
    got, err = host.api.request("POST", "/v1/networks/nb/connect", {"Netns": "n1"})
    assert got == 409, err
    assert _snapshot(host) == before
    runs = host.api.ok("GET", "/v1/status")["reconcile"]["runs"]
    time.sleep(2)  # flapping endpoints reconciled ~30 times a second here
    assert host.api.ok("GET", "/v1/status")["reconcile"]["runs"] - runs <= 1  # the 5 s timer at most
    for ep in (a, b):
        assert ping(host.path, ep["IPv4Address"].split("/")[0])
    links = _links(host.ns("n1"))
    assert "eth0" in links
    assert "eth1" in links


def _mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split(" ")[4] == real for line in f)


def test_a_netns_half_marked_by_a_killed_netd_is_removed(host: Host) -> None:
    """netd killed between the bind mount and its ownership marker (the old order), restarted: netns rm still
    removes the mount (and re-creating the name makes a new namespace)."""
    host.api.ok("POST", "/v1/netns", {"Name": "x"})
    host.stop(signal.SIGKILL)
    (host.run_dir / "netns-owned" / "x").unlink()  # the marker the kill prevented
    host.start()
    assert _mounted(host.ns("x"))
    got, err = host.api.request("DELETE", "/v1/netns/x")
    assert got == 204, err
    assert not _mounted(host.ns("x"))
    assert not os.path.lexists(host.ns("x"))


def test_a_marker_without_its_mount_is_finished_or_removed(host: Host) -> None:
    host.api.ok("POST", "/v1/netns", {"Name": "x"})
    host.stop(signal.SIGKILL)
    owned = host.run_dir / "netns-owned"
    (owned / "y").touch()  # killed after the marker, before the mount, of a create that was not saved
    sh("umount", host.ns("x"))  # ... and of one that was saved
    os.unlink(host.ns("x"))
    host.start()
    assert _mounted(host.ns("x"))
    assert not (owned / "y").exists()
    assert (owned / "x").exists()
    host.api.ok("DELETE", "/v1/netns/x")
    assert not os.path.lexists(host.ns("x"))


def test_a_foreign_mount_of_the_name_is_not_adopted(host: Host, test_ns: str) -> None:
    host.api.ok("POST", "/v1/netns", {"Name": "x"})  # netns_dir exists and is netd's shared mount
    path = host.ns("theirs")
    Path(path).touch()
    sh("mount", "--bind", test_ns, path)
    inode = os.stat(path).st_ino
    before = _snapshot(host)
    got, err = host.api.request("POST", "/v1/netns", {"Name": "theirs"})
    assert got == 409, err
    assert path in err["error"]["message"]
    assert "not made by netd" in err["error"]["message"]
    assert _snapshot(host) == before
    assert _mounted(path)
    assert os.stat(path).st_ino == inode
    host.api.request("POST", "/v1/reconcile")
    assert _mounted(path)
    assert os.stat(path).st_ino == inode
