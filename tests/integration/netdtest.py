"""Test harness: throw-away "hosts" (network namespaces) with a netd daemon running inside each.

Nothing here touches the machine's own namespace: a Host is a namespace made by the test, linked to an
"outside" namespace by a veth (the host's uplink), and netd runs in it through ``nsenter --net=`` (not
``ip netns exec``, whose private mount namespace would hide the netns files netd bind-mounts).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
NETD = str(VENV_BIN / "netd")
NETD_CTL = str(VENV_BIN / "netd-ctl")
CLONE_NEWNET = 0x40000000


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def in_ns(path: str, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", f"--net={path}", *cmd, check=check, timeout=timeout)


def ping(path: str, addr: str, count: int = 1, wait: float = 1) -> bool:
    """One echo, one second: for checks that traffic is *blocked* (a reply would be a failure)."""
    r = in_ns(path, "ping", "-n", "-q", "-c", str(count), "-W", str(wait), addr, check=False)
    return r.returncode == 0


def reach(path: str, addr: str, deadline: int = 5) -> bool:
    """One reply within ``deadline`` seconds, an echo a second: for checks that traffic *passes*.  ARP or IPv6
    neighbour discovery on a busy machine can outlast a single one-second ping."""
    r = in_ns(path, "ping", "-n", "-q", "-c", "1", "-w", str(deadline), addr, check=False)
    return r.returncode == 0


def source_seen_outside(host: Host, src_ns: str, v6: bool = False, port: int = 7777) -> str | None:
    """Open a TCP connection from ``src_ns`` to a server in the host's outside namespace; return the source
    address the server saw (the host's uplink address when NAT is on), or None when nothing arrived."""
    server_ip = host.outside_ip6 if v6 else host.outside_ip
    family = socket.AF_INET6 if v6 else socket.AF_INET
    seen: list[str] = []
    ready = threading.Event()

    def serve() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(host.outside_path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        with socket.socket(family) as srv:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((server_ip, port))
            srv.listen(1)
            srv.settimeout(5)
            ready.set()
            try:
                conn, peer = srv.accept()
                seen.append(peer[0])
                conn.close()
            except TimeoutError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ready.wait(5)
    code = f"import socket; socket.create_connection(('{server_ip}', {port}), timeout=3).close()"
    in_ns(src_ns, sys.executable, "-c", code, check=False)
    t.join(6)
    return seen[0] if seen else None


def plug_into_segment(host_ns: str, seg_ns: str, ifname: str = "lan0", peer: str = "lan0p") -> None:
    """Connect the test host to a layer-2 segment (bridge ``seg`` in ``seg_ns``) with a veth: the host's "NIC"."""
    # a torn-down host namespace's veth may still have its peer here (the kernel frees it asynchronously)
    sh("ip", "-n", seg_ns, "link", "del", peer, check=False)
    sh("ip", "-n", host_ns, "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", seg_ns)
    sh("ip", "-n", seg_ns, "link", "set", peer, "master", "seg", "up")
    sh("ip", "-n", host_ns, "link", "set", ifname, "up")


def umount_tree(d: Path) -> None:
    """Unmount and remove netns files under ``d`` (what a reboot does to /run/netns)."""
    if not d.exists():
        return
    for f in d.iterdir():
        subprocess.run(["umount", "-l", str(f)], capture_output=True)
        with contextlib.suppress(OSError):
            f.unlink()
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


class UDSClient:
    """A minimal HTTP/1.0 client over the daemon's Unix socket (for assertions; the CLI is tested separately)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def request(self, method: str, url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.path))
            head = f"{method} {url} HTTP/1.0\r\nHost: netd\r\nContent-Type: application/json\r\n"
            head += f"Content-Length: {len(data)}\r\n\r\n"
            s.sendall(head.encode() + data)
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        resp = b"".join(chunks)
        header, _, payload = resp.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        return status, (json.loads(payload) if payload.strip() else None)

    def text(self, url: str) -> str:
        """GET a non-JSON resource (the /metrics exposition) and return its body."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.path))
            s.sendall(f"GET {url} HTTP/1.0\r\nHost: netd\r\n\r\n".encode())
            resp = b"".join(iter(lambda: s.recv(65536), b""))
        return resp.partition(b"\r\n\r\n")[2].decode()

    def ok(self, method: str, url: str, body: Any = None) -> Any:
        status, data = self.request(method, url, body)
        assert status < 300, f"{method} {url} -> {status} {data}"
        return data


class Host:
    """A test host: a namespace with an uplink to an 'outside' namespace, and a netd that runs inside it."""

    def __init__(self, tmp: Path, tag: str | None = None, config: str = "") -> None:
        self.tag = tag or secrets.token_hex(3)
        self.name = f"ndt-h-{self.tag}"
        self.outside = f"ndt-o-{self.tag}"
        self.path = f"/run/netns/{self.name}"
        self.outside_path = f"/run/netns/{self.outside}"
        self.root = tmp
        self.state_dir = tmp / "state"
        self.run_dir = Path(f"/run/ndt-{self.tag}")
        self.netns_dir = self.run_dir / "netns"
        self.config_path = tmp / "netd.toml"
        self.extra_config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "netd.log"
        self.api = UDSClient(self.run_dir / "netd.sock")
        self.uplink_ip = "10.255.0.1"
        self.outside_ip = "10.255.0.2"
        self.uplink_ip6 = "fd99:255::1"
        self.outside_ip6 = "fd99:255::2"

    # -- the host's "hardware" ----------------------------------------------------------------------------------

    def boot(self) -> None:
        """Create the host namespace and its uplink (what exists before netd starts after a reboot)."""
        sh("ip", "netns", "add", self.name)
        if not Path(self.outside_path).exists():
            sh("ip", "netns", "add", self.outside)
            in_ns(self.outside_path, "ip", "link", "set", "lo", "up")
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        sh(
            "ip",
            "-n",
            self.name,
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            f"o-{self.tag}",
            "netns",
            self.outside,
        )
        sh("ip", "-n", self.name, "addr", "add", f"{self.uplink_ip}/24", "dev", "uplink")
        sh("ip", "-n", self.name, "link", "set", "uplink", "up")
        sh("ip", "-n", self.outside, "addr", "replace", f"{self.outside_ip}/24", "dev", f"o-{self.tag}")
        sh("ip", "-n", self.outside, "link", "set", f"o-{self.tag}", "up")
        sh("ip", "-n", self.name, "route", "add", "default", "via", self.outside_ip)
        sh("ip", "-n", self.name, "addr", "add", f"{self.uplink_ip6}/64", "dev", "uplink", "nodad")
        sh("ip", "-n", self.outside, "addr", "replace", f"{self.outside_ip6}/64", "dev", f"o-{self.tag}", "nodad")
        sh("ip", "-n", self.name, "-6", "route", "add", "default", "via", self.outside_ip6)

    def write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        defaults = {
            "state_dir": f'"{self.state_dir}"',
            "run_dir": f'"{self.run_dir}"',
            "netns_dir": f'"{self.netns_dir}"',
            "etc_netns_dir": f'"{self.root / "etc-netns"}"',  # never the machine's own /etc/netns
            "reconcile_interval": "5.0",
            "log_level": '"debug"',
            "log_format": '"json"',
        }
        given = {line.split("=")[0].strip() for line in self.extra_config.splitlines() if "=" in line}
        top = "".join(f"{k} = {v}\n" for k, v in defaults.items() if k not in given)
        self.config_path.write_text(top + self.extra_config + "\n")

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> None:
        self.write_config()
        self.spawn(["nsenter", f"--net={self.path}", NETD, "--config", str(self.config_path)], env)
        if wait:
            self.wait_ready()

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Run the daemon's command line, its output going to the host's log."""
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(
                argv, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
            )

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"netd exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                status, _ = self.api.request("GET", "/v1/status")
                if status == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"netd not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def reboot(self) -> None:
        """kill -9 netd, then lose everything a reboot loses: the namespace and all in it, /run. Keep state_dir."""
        self.stop(signal.SIGKILL)
        umount_tree(self.netns_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        sh("ip", "netns", "del", self.name, check=False)
        sh("ip", "-n", self.outside, "link", "del", f"o-{self.tag}", check=False)
        self.boot()

    def state_bytes(self) -> bytes:
        """The stored desired state as bytes (snapshot + journal): for "nothing changed" checks."""
        files = ("state.json", "state.json.journal")
        return b"--".join(
            (self.state_dir / f).read_bytes() if (self.state_dir / f).exists() else b"" for f in files
        )

    def stored_state(self) -> dict[str, Any]:
        """The desired state as netd would load it from its state directory."""
        from netd.engine.state import StateStore

        return StateStore(self.state_dir / "state.json").load().model_dump(mode="json")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cleanup(self) -> None:
        self.stop(signal.SIGKILL)
        umount_tree(self.netns_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for ns in (self.name, self.outside):
            sh("ip", "netns", "del", ns, check=False)

    # -- helpers ------------------------------------------------------------------------------------------------

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = sh(NETD_CTL, "--socket", str(self.run_dir / "netd.sock"), *args, check=False)
        if check and r.returncode != 0:
            raise AssertionError(f"netd-ctl {' '.join(args)} -> {r.returncode}: {r.stderr}\n{r.stdout}")
        return r

    def ns(self, name: str) -> str:
        return str(self.netns_dir / name)

    def kernel_snapshot(self) -> str:
        """Links, addresses and the nft ruleset of the host namespace, for 'nothing changed' checks."""
        # operstate (UNKNOWN -> UP) and the carrier flags (NO-CARRIER <-> LOWER_UP, as a bridge's ports settle)
        # are the kernel's, not a change anyone made
        links = re.sub(r" state [A-Z]+ ", " ", in_ns(self.path, "ip", "-o", "link").stdout)
        links = re.sub(r"(?<=[<,])(?:NO-CARRIER|LOWER_UP)(?:,|(?=>))", "", links).replace(",>", ">")
        addrs = in_ns(self.path, "ip", "-o", "addr", "show", "scope", "global").stdout
        # -s: no counters (iptables-nft rules carry counters that move with any forwarded packet)
        rules = in_ns(self.path, "nft", "-s", "list", "ruleset").stdout
        saved = in_ns(self.path, "iptables-save").stdout + in_ns(self.path, "ip6tables-save").stdout
        # iptables-save: drop its dated comment lines and the packet counters
        rules += re.sub(r" \[\d+:\d+\]", "", "\n".join(x for x in saved.splitlines() if not x.startswith("#")))
        return links + addrs + rules


@contextlib.contextmanager
def foreign_netns(prefix: str = "c") -> Iterator[str]:
    """A named namespace of the test's own (not netd's), as a container runtime would pass it: its path."""
    name = f"ndt-{prefix}-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield f"/run/netns/{name}"
    finally:
        sh("ip", "netns", "del", name, check=False)


@contextlib.contextmanager
def running_host(tmp: Path, config: str = "", start: bool = True) -> Iterator[Host]:
    host = Host(tmp, config=config)
    try:
        host.boot()
        if start:
            host.start()
        yield host
    except BaseException:
        print(host.log_text()[-5000:])
        raise
    finally:
        host.cleanup()
