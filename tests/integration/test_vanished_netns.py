"""Issue 14: an endpoint whose namespace is deleted goes at once, not at the next full pass.

A container runtime's ``--netns-path`` namespace goes when its last process exits; a named mount (``ip netns
add``) goes when someone removes it by hand.  Either way the kernel frees the namespace (unless something, like
a netlink socket netd kept open in it, holds it), deletes the veth, and netd must forget the endpoint and free
its address.  The full-pass timer is set far out (300 s) so only that path can do it.  Every namespace here is
the test's own: a process-held one (``unshare --net``) or ``ip netns add ndt-...``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netdtest import Host, in_ns, reach, running_host, sh

NET = {"Name": "vn", "IPAM": {"Config": [{"Subnet": "172.30.60.0/24"}]}}
DEADLINE = 15.0  # generous under load; the target (2 s) is measured by bench/vanish.py, not asserted here


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with running_host(tmp_path, config="reconcile_interval = 300.0") as h:
        h.api.ok("POST", "/v1/networks", NET)
        yield h


def _held_netns() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    path = f"/proc/{proc.pid}/ns/net"
    own = os.stat("/proc/self/ns/net").st_ino
    deadline = time.monotonic() + 5
    while os.stat(path).st_ino == own and time.monotonic() < deadline:  # until unshare has switched
        time.sleep(0.02)
    return proc, path


def _link_exists(host: Host, ifname: str) -> bool:
    return in_ns(host.path, "ip", "link", "show", ifname, check=False).returncode == 0


def _wait_gone(host: Host, ep: dict[str, Any]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if not host.api.ok("GET", "/v1/networks/vn")["Containers"] and not _link_exists(host, ep["HostInterface"]):
            return
        time.sleep(0.1)
    pytest.fail(f"endpoint {ep['Name']} still there {DEADLINE} s after its namespace was deleted")


def _address_is_free(host: Host, ep: dict[str, Any]) -> None:
    host.api.ok("POST", "/v1/netns", {"Name": "again"})
    ip = ep["IPv4Address"].split("/")[0]
    body = {"Netns": "again", "EndpointConfig": {"IPAMConfig": {"IPv4Address": ip}}}
    again = host.api.ok("POST", "/v1/networks/vn/connect", body)
    assert again["IPv4Address"] == ep["IPv4Address"]


def test_a_process_held_namespace_that_exits(host: Host) -> None:
    proc, path = _held_netns()
    try:
        # a second endpoint that must stay: only the vanished one is removed
        host.api.ok("POST", "/v1/netns", {"Name": "stays"})
        stays = host.api.ok("POST", "/v1/networks/vn/connect", {"Netns": "stays"})
        ep = host.api.ok("POST", "/v1/networks/vn/connect", {"NetnsPath": path})
        assert reach(path, "172.30.60.1")
        assert _link_exists(host, ep["HostInterface"])
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        names = {c["Name"] for c in host.api.ok("GET", "/v1/networks/vn")["Containers"].values()}
        if path not in names and not _link_exists(host, ep["HostInterface"]):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"endpoint {path} still there {DEADLINE} s after its process exited")
    assert names == {"stays"}
    assert _link_exists(host, stays["HostInterface"])
    assert reach(host.ns("stays"), "172.30.60.1")
    host.api.ok("POST", "/v1/networks/vn/disconnect", {"Netns": "stays"})
    _address_is_free(host, ep)
    assert '"action_failed"' not in host.log_text()


def test_a_named_mount_removed_by_hand(host: Host) -> None:
    name = f"ndt-v-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    try:
        path = f"/run/netns/{name}"
        ep = host.api.ok("POST", "/v1/networks/vn/connect", {"NetnsPath": path})
        assert reach(path, "172.30.60.1")
    finally:
        sh("ip", "netns", "del", name, check=False)
    _wait_gone(host, ep)
    _address_is_free(host, ep)
    assert '"action_failed"' not in host.log_text()
