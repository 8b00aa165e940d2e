"""Throw-away etcd servers for the cluster tests (Debian's etcd-server, /usr/bin/etcd).

Every member listens on 127.0.0.1 on ports the kernel picked free (or, with ``netns``/``address``, on an
address inside a test namespace, e.g. the underlay that simulated hosts share), keeps its data in tmp_path, and
runs with fast raft timings (``--heartbeat-interval=10 --election-timeout=100``: healthy in ~150 ms).
:func:`etcd_cluster` always stops every member it started, even when the test fails; stopping a member
(``kill``) and starting it again on the same data dir (``start``) is how tests take etcd down and back up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def in_netns(path: str | None, fn: Callable[[], T]) -> T:
    """``fn()`` in a fresh thread that first entered the network namespace at ``path`` (None: right here)."""
    if path is None:
        return fn()
    box: dict[str, T | BaseException] = {}

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {path}")
            box["r"] = fn()
        except BaseException as e:
            box["e"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]  # type: ignore[misc]
    return box["r"]  # type: ignore[return-value]


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_tls(d: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (openssl, EC P-256)."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=netd-test-ca",
    )
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n")
        _openssl(
            "req",
            *ec,
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
            "-subj",
            f"/CN=netd-test-{name}",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.pem"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-out",
            str(d / f"{name}.pem"),
            "-days",
            "1",
            "-extfile",
            str(ext),
        )
    return {
        "ca": d / "ca.pem",
        "cert": d / "client.pem",
        "key": d / "client.key",
        "server_cert": d / "server.pem",
        "server_key": d / "server.key",
    }


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"
    address: str = "127.0.0.1"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{self.peer_port}"


@dataclass
class EtcdCluster:
    base: Path
    size: int = 1
    members: list[Member] = field(default_factory=list)
    token: str = field(default_factory=lambda: "netd-test-" + secrets.token_hex(4))
    pids: list[int] = field(default_factory=list)  # every etcd process ever started, for the final check
    tls: dict[str, Path] | None = None  # make_tls(): clients must present a certificate signed by the CA
    netns: str | None = None  # run the members inside this network namespace (a path: /run/netns/NAME) ...
    address: str = "127.0.0.1"  # ... listening on this address of it

    def __post_init__(self) -> None:
        ports = in_netns(self.netns, lambda: free_ports(2 * self.size))
        for i in range(self.size):
            self.members.append(
                Member(
                    f"m{i}",
                    ports[2 * i],
                    ports[2 * i + 1],
                    self.base / f"etcd-m{i}",
                    self.base / f"etcd-m{i}.log",
                    scheme="https" if self.tls else "http",
                    address=self.address,
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _cmd(self, m: Member) -> list[str]:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        return [
            *(["nsenter", f"--net={self.netns}"] if self.netns else []),
            ETCD,
            "--name",
            m.name,
            "--data-dir",
            str(m.data_dir),
            "--listen-client-urls",
            m.client_url,
            "--advertise-client-urls",
            m.client_url,
            "--listen-peer-urls",
            m.peer_url,
            "--initial-advertise-peer-urls",
            m.peer_url,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            self.token,
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--logger",
            "zap",
            "--log-level",
            "warn",
            *(
                [
                    "--cert-file",
                    str(self.tls["server_cert"]),
                    "--key-file",
                    str(self.tls["server_key"]),
                    "--trusted-ca-file",
                    str(self.tls["ca"]),
                    "--client-cert-auth",
                ]
                if self.tls
                else []
            ),
        ]

    def _health_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.tls["ca"]))
        ctx.load_cert_chain(str(self.tls["cert"]), str(self.tls["key"]))
        return ctx

    def start(self, i: int | None = None, *, wait: bool = True) -> None:
        """Start member ``i`` (None: all) on its data dir; wait until the cluster answers /health."""
        for m in self.members if i is None else [self.members[i]]:
            assert m.proc is None or m.proc.poll() is not None, f"{m.name} is already running"
            with m.log.open("ab") as out:
                m.proc = subprocess.Popen(
                    self._cmd(m),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.pids.append(m.proc.pid)
        if wait:
            for m in self.members if i is None else [self.members[i]]:
                self.wait_healthy(m)

    def healthy(self, m: Member) -> bool:
        def probe() -> bool:
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(m.client_url + "/health", timeout=1, context=self._health_context()) as r,
            ):
                return b'"health":"true"' in r.read()
            return False

        return in_netns(self.netns, probe)

    def wait_healthy(self, m: Member, deadline: float = 20) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if m.proc is not None and m.proc.poll() is not None:
                raise RuntimeError(f"etcd {m.name} exited: {m.log.read_text()[-2000:]}")
            if self.healthy(m):
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd {m.name} not healthy after {deadline} s: {m.log.read_text()[-2000:]}")

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            os.killpg(m.proc.pid, sig)
            m.proc.wait(10)
        m.proc = None

    def wipe(self, i: int) -> None:
        """Member ``i``'s data is lost (it must be stopped): it starts again as a brand-new etcd."""
        shutil.rmtree(self.members[i].data_dir, ignore_errors=True)
        self.token = "netd-test-" + secrets.token_hex(4)

    def stop(self) -> None:
        for i, m in enumerate(self.members):
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(m.proc.pid, signal.SIGTERM)
                try:
                    m.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.kill(i)
            m.proc = None

    def leftover(self) -> list[int]:
        """Processes this cluster started that still exist (must be none after stop)."""
        alive = []
        for pid in self.pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            with contextlib.suppress(OSError):  # a zombie of ours would still answer kill(0)
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    continue
            alive.append(pid)
        return alive


@contextlib.contextmanager
def etcd_cluster(
    base: Path, size: int = 1, tls: bool = False, netns: str | None = None, address: str = "127.0.0.1"
) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(base, size, tls=make_tls(base / "tls") if tls else None, netns=netns, address=address)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        left = cluster.leftover()
        assert not left, f"etcd processes left behind: {left}"
