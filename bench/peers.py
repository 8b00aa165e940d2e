"""The peer tools netd is compared with, driven the way their users drive them (shared/docs/reference/peers.md).

Every tool runs inside its own throw-away "outer" namespace: this process ``setns()``es into it for the run (and
checks that it got there), so the plugins it spawns build their bridge, veths and iptables rules there, never in
the machine's own namespace.  Endpoint namespaces are ``ip netns add``ed beforehand (not timed) and removed after.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

CLONE_NEWNET = 0x40000000
CNI_PATH = "/usr/lib/cni"
NETAVARK = "/usr/lib/podman/netavark"
SUBNET, GATEWAY, PREFIX = "10.88.0.0/16", "10.88.0.1", 16


def ip_of(i: int) -> str:
    """The i-th endpoint address of 10.88.0.0/16 (from .0.2 on)."""
    n = i + 2
    return f"10.88.{n // 256}.{n % 256}"


def run(cmd: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {r.returncode}: {r.stderr.strip()} {r.stdout.strip()}"[:2000])
    return r.stdout


def ns_inode(path: str) -> int:
    return os.stat(path).st_ino


@contextlib.contextmanager
def inside(path: str) -> Iterator[None]:
    """Run the block (and every process it spawns) in the network namespace at ``path``; always come back."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path} failed")
        if ns_inode("/proc/self/ns/net") != ns_inode(path):
            raise RuntimeError(f"not inside {path} after setns; refusing to run")
        yield
    finally:
        if libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the original namespace failed")
        os.close(home)
        os.close(target)


def netns_batch(op: str, names: list[str]) -> None:
    """``ip netns add|del`` many namespaces with one ip process."""
    if names:
        run(["ip", "-batch", "-"], stdin="".join(f"netns {op} {n}\n" for n in names))


class Tool(Protocol):
    name: str

    def prepare(self, n: int) -> None: ...
    def attach(self, i: int) -> None: ...
    def detach(self, i: int) -> None: ...


class Cni:
    """CNI bridge + host-local (ipMasq), optionally chained with portmap as libcni does."""

    def __init__(self, netns: list[str], workdir: Path, portmap: bool = False) -> None:
        self.name = "cni-bridge+portmap" if portmap else "cni-bridge"
        self.netns = netns
        self.portmap = portmap
        self.conf = {
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "bridge",
            "bridge": "cni-bench0",
            "isGateway": True,
            "ipMasq": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": SUBNET}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(workdir / "ipam"),
            },
        }
        self.results: dict[int, Any] = {}

    def prepare(self, n: int) -> None:
        pass

    def _env(self, cmd: str, i: int) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": cmd,
            "CNI_CONTAINERID": f"bench{i}",
            "CNI_NETNS": f"/run/netns/{self.netns[i]}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_PATH,
        }

    def _portmap_conf(self, i: int) -> str:
        return json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "bench",
                "type": "portmap",
                "snat": True,
                "capabilities": {"portMappings": True},
                "runtimeConfig": {
                    "portMappings": [{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]
                },
                "prevResult": self.results[i],
            }
        )

    def attach(self, i: int) -> None:
        out = run([f"{CNI_PATH}/bridge"], json.dumps(self.conf), self._env("ADD", i))
        self.results[i] = json.loads(out)
        if self.portmap:
            run([f"{CNI_PATH}/portmap"], self._portmap_conf(i), self._env("ADD", i))

    def detach(self, i: int) -> None:
        if self.portmap:
            run([f"{CNI_PATH}/portmap"], self._portmap_conf(i), self._env("DEL", i))
        conf = {**self.conf, "prevResult": self.results.pop(i)}
        run([f"{CNI_PATH}/bridge"], json.dumps(conf), self._env("DEL", i))


class Netavark:
    """podman's netavark: setup/teardown per namespace, static IPs given by the caller (it has no IPAM)."""

    def __init__(self, netns: list[str], workdir: Path, ports: bool = False) -> None:
        self.name = "netavark+port" if ports else "netavark"
        self.netns = netns
        self.ports = ports
        self.config = workdir / "netavark"
        self.config.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "NETAVARK_FW": "iptables"}

    def prepare(self, n: int) -> None:
        pass

    def _opts(self, i: int) -> str:
        body: dict[str, Any] = {
            "container_id": f"{i:064x}",
            "container_name": f"bench{i}",
            "networks": {"bench": {"interface_name": "eth0", "static_ips": [ip_of(i)]}},
            "network_info": {
                "bench": {
                    "dns_enabled": False,
                    "driver": "bridge",
                    "id": "b" * 64,
                    "internal": False,
                    "ipv6_enabled": False,
                    "name": "bench",
                    "network_interface": "nv-bench0",
                    "subnets": [{"gateway": GATEWAY, "subnet": SUBNET}],
                }
            },
        }
        if self.ports:
            body["port_mappings"] = [
                {"host_ip": "", "container_port": 80, "host_port": 20000 + i, "range": 1, "protocol": "tcp"}
            ]
        return json.dumps(body)

    def _call(self, verb: str, i: int) -> None:
        cmd = [NETAVARK, "--config", str(self.config), verb, f"/run/netns/{self.netns[i]}"]
        r = subprocess.run(cmd, input=self._opts(i), capture_output=True, text=True, env=self.env, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"netavark {verb} -> {r.returncode}: {r.stderr.strip()}"[:2000])

    def attach(self, i: int) -> None:
        self._call("setup", i)

    def detach(self, i: int) -> None:
        self._call("teardown", i)


class IpBatch:
    """The floor: the same kernel work (veth with the peer created in the netns, address, route, up) done by
    iproute2 -- one ``ip -batch`` for the host side and one ``ip -n NS -batch`` for the namespace side per op.
    The bridge, its address and the masquerade rule are set up once, untimed."""

    name = "ip-batch (floor)"

    def __init__(self, netns: list[str]) -> None:
        self.netns = netns

    def prepare(self, n: int) -> None:
        run(
            ["ip", "-batch", "-"],
            f"link add fl-bench0 type bridge\naddr add {GATEWAY}/{PREFIX} dev fl-bench0\nlink set fl-bench0 up\n",
        )
        run(
            ["nft", "-f", "-"],
            "table ip floor {\n chain post {\n  type nat hook postrouting priority 100;\n"
            f'  ip saddr {SUBNET} oifname != "fl-bench0" masquerade\n }}\n}}\n',
        )

    def attach(self, i: int) -> None:
        v = f"fl{i}"
        run(
            ["ip", "-batch", "-"],
            f"link add {v} type veth peer name eth0 netns {self.netns[i]}\nlink set {v} master fl-bench0 up\n",
        )
        run(
            ["ip", "-n", self.netns[i], "-batch", "-"],
            f"addr add {ip_of(i)}/{PREFIX} dev eth0\nlink set eth0 up\nroute add default via {GATEWAY}\n",
        )

    def detach(self, i: int) -> None:
        run(["ip", "link", "del", f"fl{i}"])


def settle(seconds: float = 2.0) -> None:
    """Give the kernel's deferred namespace cleanup a moment between tools (it runs on a workqueue)."""
    time.sleep(seconds)
