"""Multi-host harness: simulated nodes (``netdtest.Host`` namespaces) on one underlay, each running its own netd
(own state, run and netns directories, started with ``nsenter --net=``), and a throw-away etcd on the underlay.

The underlay is a bridge ``seg`` in a segment namespace with 192.168.77.1/24; node i gets ``lan0`` with
192.168.77.(10+i)/24 and its default route via 192.168.77.1, so ``advertise_address`` defaults to its underlay
address.  The segment namespace is also every node's "outside": a server there sees the node's underlay address
when an endpoint leaves through the node's docker_gwbridge NAT.  etcd listens on 192.168.77.1.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "cluster"))

from etcdfix import EtcdCluster, etcd_cluster
from netdtest import Host, in_ns, plug_into_segment, sh, umount_tree

SEG_IP = "192.168.77.1"
PORTECHO = str(Path(__file__).parents[1] / "portecho.py")


class Node(Host):
    """A simulated cluster node: a Host whose uplink is the shared underlay (no outside namespace of its own)."""

    def __init__(self, tmp: Path, seg: str, index: int, etcd: list[str], extra: str = "", ttl: int = 2) -> None:
        self.index = index
        self.node_name = f"node{index}"
        self.etcd = etcd
        self.ttl = ttl
        self.cluster_extra = extra
        super().__init__(tmp / self.node_name, config=self._config())
        self.seg = seg
        self.outside = seg
        self.outside_path = f"/run/netns/{seg}"
        self.outside_ip = SEG_IP
        self.underlay_ip = f"192.168.77.{10 + index}"

    def _config(self) -> str:
        eps = ", ".join(f'"{e}"' for e in self.etcd)
        return (
            f'{self.cluster_extra}\n[cluster]\netcd_endpoints = [{eps}]\nnode_name = "{self.node_name}"\n'
            f"lease_ttl = {self.ttl}\nrequest_timeout = 2.0\n"
        )

    def boot(self) -> None:
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        plug_into_segment(self.name, self.seg, "lan0", f"u-{self.tag}")
        # a NIC keeps its MAC across a reboot: with a new one, the other nodes' underlay ARP entries would point
        # at the old MAC until they went stale (up to ~45 s), a test artefact, not an overlay problem
        sh("ip", "-n", self.name, "link", "set", "lan0", "address", f"02:77:00:00:00:{self.index:02x}")
        sh("ip", "-n", self.name, "addr", "add", f"{self.underlay_ip}/24", "dev", "lan0")
        sh("ip", "-n", self.name, "route", "add", "default", "via", SEG_IP)

    def reboot(self) -> None:
        self.stop(signal.SIGKILL)
        umount_tree(self.netns_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        sh("ip", "netns", "del", self.name, check=False)
        self.boot()

    def cleanup(self) -> None:
        self.stop(signal.SIGKILL)
        umount_tree(self.netns_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        sh("ip", "netns", "del", self.name, check=False)
        sh("ip", "-n", self.seg, "link", "del", f"u-{self.tag}", check=False)

    # -- helpers ------------------------------------------------------------------------------------------------

    def json(self, *args: str) -> Any:
        return json.loads(self.ctl(*args).stdout)

    def connect(self, net: str, ns: str, *extra: str) -> dict[str, Any]:
        if not (self.netns_dir / ns).exists():
            self.ctl("netns", "create", ns)
        return json.loads(self.ctl("network", "connect", *extra, net, ns).stdout)

    def fdb_dsts(self, dev: str) -> set[str]:
        """Remote node addresses the VXLAN device ``dev`` forwards to (its static FDB entries)."""
        out = in_ns(self.path, "bridge", "fdb", "show", "dev", dev, check=False).stdout
        return {line.split(" dst ")[1].split()[0] for line in out.splitlines() if " dst " in line}

    def neigh(self, dev: str) -> set[str]:
        out = in_ns(self.path, "ip", "-4", "neigh", "show", "dev", dev, check=False).stdout
        return {line.split()[0] for line in out.splitlines() if "PERMANENT" in line}


def addr(ep: dict[str, Any]) -> str:
    return str(ep["IPv4Address"]).split("/")[0]


def until(check: Callable[[], bool], deadline: float = 20) -> bool:
    """Poll ``check`` until true (a guard against hangs; no test asserts on timing)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return check()


@contextlib.contextmanager
def echo_server(path: str, port: int = 7070) -> Iterator[None]:
    proc = subprocess.Popen(
        ["nsenter", f"--net={path}", sys.executable, PORTECHO, "serve", "t", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(5)


def tcp(path: str, ip: str, port: int = 7070) -> bool:
    r = in_ns(path, sys.executable, PORTECHO, "send", "tcp", ip, str(port), check=False)
    return r.returncode == 0


@dataclass
class Cluster:
    tmp: Path
    seg: str
    etcd: EtcdCluster
    nodes: list[Node] = field(default_factory=list)

    @property
    def seg_path(self) -> str:
        return f"/run/netns/{self.seg}"

    def add(self, extra: str = "", start: bool = True) -> Node:
        node = Node(self.tmp, self.seg, len(self.nodes) + 1, self.etcd.endpoints, extra)
        self.nodes.append(node)
        node.boot()
        if start:
            node.start()
        return node


@contextlib.contextmanager
def cluster(tmp: Path, n: int = 3, extra: str = "", etcd_members: int = 1) -> Iterator[Cluster]:
    seg = f"ndt-s-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", seg)
    path = f"/run/netns/{seg}"
    c: Cluster | None = None
    try:
        in_ns(path, "ip", "link", "set", "lo", "up")
        in_ns(path, "ip", "link", "add", "seg", "type", "bridge")
        in_ns(path, "ip", "addr", "add", f"{SEG_IP}/24", "dev", "seg")
        in_ns(path, "ip", "link", "set", "seg", "up")
        (tmp / "etcd").mkdir(parents=True, exist_ok=True)
        with etcd_cluster(tmp / "etcd", etcd_members, netns=path, address=SEG_IP) as etcd:
            c = Cluster(tmp, seg, etcd)
            try:
                for _ in range(n):
                    c.add(extra)
                yield c
            except BaseException:
                for node in c.nodes:
                    print(f"==== {node.node_name} log\n" + node.log_text()[-4000:])
                raise
            finally:
                for node in c.nodes:
                    node.cleanup()
    finally:
        sh("ip", "netns", "del", seg, check=False)
