"""netd as a systemd service: the unit file, sd_notify, and named netns seen host-wide from a private mount ns.

PID 1 on the test machine is not systemd, so the service itself cannot be started here: the unit is checked with
systemd-analyze, and what systemd would do to netd is reproduced by hand (a fake NOTIFY_SOCKET; a private
mount namespace made the way systemd makes one for ProtectSystem=/PrivateTmp=).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netdtest import NETD, REPO, Host, in_ns, reach, sh, umount_tree

UNIT = REPO / "systemd" / "netd.service"


def _unit_for_this_checkout(tmp: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's netd (verify checks that the binary exists)."""
    text = UNIT.read_text().replace("/usr/local/bin/netd", NETD)
    out = tmp / "netd.service"
    out.write_text(text)
    return out


def test_unit_verifies_without_any_output(tmp_path: Path) -> None:
    # systemd-analyze verify exits 0 on unknown keys: any output at all is a failure
    r = sh("systemd-analyze", "verify", str(_unit_for_this_checkout(tmp_path)), check=False)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_unit_security_exposure_at_most_4(tmp_path: Path) -> None:
    r = sh("systemd-analyze", "security", "--offline=true", "--no-pager", str(_unit_for_this_checkout(tmp_path)))
    m = re.search(r"Overall exposure level for netd\.service: ([0-9.]+)", r.stdout)
    assert m, r.stdout[-2000:]
    score = float(m.group(1))
    print(f"systemd-analyze security exposure: {score}")
    assert score <= 4.0


def test_unit_has_what_the_issue_asks() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "StateDirectory=netd",
        "RuntimeDirectoryPreserve=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
        "Before=network-online.target",
    ):
        assert f"\n{line}\n" in text, line
    assert re.search(r"\nWatchdogSec=\d+s?\n", text)
    caps = re.search(r"\nCapabilityBoundingSet=(.*)\n", text)
    assert caps and {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN"} <= set(caps.group(1).split())


# -- sd_notify ----------------------------------------------------------------------------------------------


def _recv_all(sock: socket.socket, until: float) -> list[str]:
    out = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return out


def test_ready_only_after_first_reconcile_and_watchdog_keeps_coming(tmp_path: Path) -> None:
    host = Host(tmp_path)
    notify = tmp_path / "notify.sock"
    with contextlib.ExitStack() as stack:
        stack.callback(host.cleanup)
        host.boot()
        host.start()
        host.api.ok("POST", "/v1/networks", {"Name": "n1", "IPAM": {"Config": [{"Subnet": "172.30.61.0/24"}]}})
        host.api.ok("POST", "/v1/netns", {"Name": "w1"})
        ep = host.api.ok("POST", "/v1/networks/n1/connect", {"Netns": "w1"})
        bridge = host.api.ok("GET", "/v1/networks/n1")["Options"].get("com.docker.network.bridge.name")
        host.reboot()  # the kernel forgets everything; the desired state stays on disk

        sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        sock.bind(str(notify))
        host.start(wait=False, env={"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"})
        sock.settimeout(30)
        first = sock.recv(4096).decode()
        # the moment READY=1 arrives, the replay is complete: netns, bridge and endpoint are in the kernel
        links = in_ns(host.path, "ip", "-o", "link").stdout
        alive = in_ns(host.ns("w1"), "ip", "-o", "addr", "show", "eth0", check=False)
        assert first.startswith("READY=1\n"), first
        assert "STATUS=" in first and "1 endpoints" in first
        if bridge:
            assert f" {bridge}:" in links
        assert alive.returncode == 0 and str(ep["IPv4Address"]).split("/")[0] in alive.stdout

        later = _recv_all(sock, time.monotonic() + 1.5)
        watchdogs = [m for m in later if "WATCHDOG=1" in m]
        assert len(watchdogs) >= 3, later  # 0.2 s interval (half of WATCHDOG_USEC) over 1.5 s
        assert not any("READY=1" in m for m in later)
        assert host.stop() == 0
        stopping = _recv_all(sock, time.monotonic() + 1)
        assert any("STOPPING=1" in m for m in stopping)


def test_no_notify_socket_means_no_notify_task(tmp_path: Path) -> None:
    host = Host(tmp_path)
    try:
        host.boot()
        host.start()
        st = host.api.ok("GET", "/v1/status")
        assert st["ready"] is True
    finally:
        host.cleanup()


# -- named netns visible host-wide from a private mount namespace ---------------------------------------------


class SandboxedHost(Host):
    """netd started the way systemd starts it with ProtectSystem=/PrivateTmp=: in its own mount namespace,
    slave of ours, with read-only /usr, a private /tmp and a read-write bind of its runtime directory."""

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> None:
        self.write_config()
        rd = str(self.run_dir)
        # a checkout under /tmp (CI may clone there) would vanish under the private /tmp: bind it back in
        keep = f"{self.root}/outer-tmp"
        rel = REPO.relative_to("/tmp") if REPO.is_relative_to("/tmp") else None
        before = f"mkdir -p {keep}\nmount --bind /tmp {keep}\n" if rel else ""
        after = f"mkdir -p /tmp/{rel}\nmount --bind {keep}/{rel} /tmp/{rel}\n" if rel else ""
        script = (
            "set -e\n"
            + before
            + "mount -t tmpfs -o mode=1777 tmpfs /tmp\n"  # PrivateTmp=
            + after
            + "mount --bind /usr /usr && mount -o remount,bind,ro /usr\n"  # ProtectSystem= (the part that matters)
            + f"mount --bind {rd} {rd}\n"  # RuntimeDirectory=/ReadWritePaths=
            + "mount --make-rshared /\n"  # systemd's default MountFlags=shared, after the slave step
            + f"exec nsenter --net={self.path} {NETD} --config {self.config_path}\n"
        )
        self.spawn(["unshare", "--mount", "--propagation", "slave", "sh", "-c", script], env)
        if wait:
            self.wait_ready()


@contextlib.contextmanager
def sandboxed_host(host_mount_ns: str) -> Iterator[SandboxedHost]:
    root = Path(f"/run/ndt-sd-{secrets.token_hex(3)}")  # not under /tmp: the daemon gets a private /tmp
    root.mkdir()
    host = SandboxedHost(root, config=f'host_mount_namespace = "{host_mount_ns}"\n')
    try:
        host.boot()
        # the host side: like /run on a systemd host, the runtime directory is a shared mount
        host.run_dir.mkdir(parents=True)
        sh("mount", "--bind", str(host.run_dir), str(host.run_dir))
        sh("mount", "--make-shared", str(host.run_dir))
        host.start()
        yield host
    except BaseException:
        print(host.log_text()[-5000:])
        raise
    finally:
        host.stop(signal.SIGKILL)
        umount_tree(host.netns_dir)
        subprocess.run(["umount", "-l", str(host.run_dir)], capture_output=True)
        host.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _nsfs_alive_here(path: str) -> bool:
    r = sh("findmnt", "-n", "-o", "FSTYPE", "--mountpoint", path, check=False)
    return r.returncode == 0 and "nsfs" in r.stdout


def test_netns_made_in_a_private_mount_namespace_is_visible_and_usable_outside() -> None:
    with sandboxed_host(f"/proc/{os.getpid()}/ns/mnt") as host:
        daemon_mnt = os.readlink(f"/proc/{host.proc.pid}/ns/mnt") if host.proc else ""
        assert daemon_mnt and daemon_mnt != os.readlink("/proc/self/ns/mnt")  # really another mount namespace
        host.api.ok("POST", "/v1/networks", {"Name": "n", "IPAM": {"Config": [{"Subnet": "172.30.62.0/24"}]}})
        host.api.ok("POST", "/v1/netns", {"Name": "web"})
        ep = host.api.ok("POST", "/v1/networks/n/connect", {"Netns": "web"})
        path = host.ns("web")
        assert _nsfs_alive_here(path)  # seen from the test's (outer) mount namespace
        # usable from outside: the endpoint netd configured inside is there, and packets flow
        addr = in_ns(path, "ip", "-o", "addr", "show", "eth0").stdout
        assert str(ep["IPv4Address"]) in addr
        assert reach(path, "172.30.62.1")
        # removal is seen outside too
        host.api.ok("DELETE", "/v1/netns/web")
        assert not os.path.exists(path) and not _nsfs_alive_here(path)


def test_without_host_mount_namespace_the_netns_stays_private() -> None:
    """The trap the unit avoids: mounted only in netd's own (slave) namespace, the host never sees it."""
    with sandboxed_host("") as host:
        host.api.ok("POST", "/v1/netns", {"Name": "hidden"})
        assert not _nsfs_alive_here(host.ns("hidden"))


@pytest.fixture(autouse=True)
def _no_leftover_mounts() -> Iterator[None]:
    yield
    left = sh("findmnt", "-rn", "-o", "TARGET").stdout
    assert "/run/ndt-sd-" not in left
