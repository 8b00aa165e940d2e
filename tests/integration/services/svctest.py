"""Helpers for the service tests: echo servers that answer their task's name, the LB client, dig."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mhtest import Cluster, addr, until
from netdtest import in_ns

PORTECHO = str(Path(__file__).parents[1] / "portecho.py")
LBCLIENT = str(Path(__file__).parents[1] / "firewall" / "lbclient.py")


@contextlib.contextmanager
def servers(paths: dict[str, str], port: int) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """An echo server per namespace (name -> path) answering ``name:...``; all killed on the way out."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for tag, path in paths.items():
            procs[tag] = start_server(path, tag, port)
        yield procs
    finally:
        for p in procs.values():
            stop_server(p)


def start_server(path: str, tag: str, port: int) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        ["nsenter", f"--net={path}", sys.executable, PORTECHO, "serve", tag, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def stop_server(p: subprocess.Popen[str]) -> None:
    p.kill()
    p.wait(5)


def hits(path: str, ip: str, port: int, count: int, proto: str = "tcp") -> Counter[str]:
    """Which task answered each of ``count`` fresh connections to ip:port ("-": none)."""
    out = in_ns(path, sys.executable, LBCLIENT, proto, ip, str(port), str(count), timeout=120).stdout
    return Counter(line.split()[1] for line in out.splitlines())


def timed_hits(path: str, ip: str, port: int, count: int, out: IO[str]) -> subprocess.Popen[str]:
    """The LB client in the background: one line per connection, ``<monotonic start> <task>``, to ``out``, a file:
    never a pipe, which the client fills in about a second at thousands of connections/s and then stalls on."""
    return subprocess.Popen(
        ["nsenter", f"--net={path}", sys.executable, LBCLIENT, "tcp", ip, str(port), str(count)],
        stdout=out,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def dig(path: str, server: str, name: str) -> list[str]:
    r = in_ns(path, "dig", f"@{server}", "+time=3", "+tries=1", "+short", name, check=False)
    return sorted(x for x in r.stdout.split() if re.match(r"^\d+\.\d+\.\d+\.\d+$", x))


def lb_table(path: str) -> str:
    """The LB rules of a namespace, whichever backend wrote them (nft table ip netd-lb, iptables NETDLB-*)."""
    nft = in_ns(path, "nft", "list", "table", "ip", "netd-lb", check=False).stdout
    ipt = in_ns(path, "iptables-save", "-t", "nat", check=False).stdout
    return nft + "\n".join(line for line in ipt.splitlines() if "NETDLB" in line)


def break_lb(path: str) -> None:
    """Drift: the namespace's LB rules deleted by hand."""
    in_ns(path, "nft", "delete", "table", "ip", "netd-lb", check=False)
    in_ns(path, "iptables", "-t", "nat", "-F", check=False)
    in_ns(path, "iptables", "-t", "nat", "-X", check=False)


def setup_web(c: Cluster, *service_args: str) -> tuple[str, dict[str, str], dict[str, str], str]:
    """ov1 (attachable, for the clients) and service ``web`` (``service create web --network ov1 ARGS``) with
    tasks t1 (node1), t2 and t3 (node2) and a client namespace on node3: (VIP, task -> address, task ->
    namespace path, the client namespace's path).  Shared by the service tests and bench/services_*.py."""
    n1, n2, n3 = c.nodes
    n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.79.0.0/24", "ov1")
    n1.ctl("service", "create", "web", "--network", "ov1", *service_args)
    vip = n1.json("service", "inspect", "web")[0]["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]
    ips, paths = {}, {}
    for node, task in ((n1, "t1"), (n2, "t2"), (n2, "t3")):
        assert until(lambda node=node: "web" in node.ctl("service", "ls").stdout)
        ips[task] = addr(node.connect("ov1", task, "--service", "web"))
        paths[task] = node.ns(task)
    n3.connect("ov1", "client")
    return vip, ips, paths, n3.ns("client")
