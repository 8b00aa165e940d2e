"""The kernel alone (no netd): what one broadcast on a bridge costs as its up ports grow, each in its own netns.

    unshare -n -m sh -c 'mount --make-rprivate / && mkdir -p /run/netns && mount -t tmpfs none /run/netns \\
        && .venv/bin/python bench/bridge_flood.py'

Per port: a veth whose peer is eth0 of a fresh namespace, the host side on the bridge and up (timed: "create"),
the peer up with an IPv4 address (untimed, ``ip -n``), then one gratuitous ARP sent on the bridge (timed:
"broadcast": the kernel floods it to every port in the sender's softirq).  Prints first-10 / last-10 medians.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time

from pyroute2 import IPRoute
from pyroute2 import netns as pnetns

MAC = b"\x02\x00\x00\x00\x00\x01"


def garp(ip: bytes) -> bytes:
    return b"\x00\x01\x08\x00\x06\x04\x00\x01" + MAC + ip + b"\x00" * 6 + ip


def main(n: int) -> None:
    ip = IPRoute()
    ip.link("add", ifname="kbr0", kind="bridge")
    br = ip.link_lookup(ifname="kbr0")[0]
    ip.link("set", index=br, state="up")
    pkt = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    create: list[float] = []
    bcast: list[float] = []
    for i in range(n):
        pnetns.create(f"kn{i}")
        fd = os.open(f"/run/netns/kn{i}", os.O_RDONLY)
        t0 = time.perf_counter()
        ip.link("add", ifname=f"kh{i}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd}, master=br)
        ip.link("set", index=ip.link_lookup(ifname=f"kh{i}")[0], state="up")
        create.append((time.perf_counter() - t0) * 1000)
        os.close(fd)
        addr = f"10.99.{i // 250}.{i % 250 + 1}/16"
        subprocess.run(["ip", "-n", f"kn{i}", "addr", "add", addr, "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", f"kn{i}", "link", "set", "eth0", "up"], check=True)
        time.sleep(0.002)
        t0 = time.perf_counter()
        pkt.sendto(garp(bytes([10, 98, i // 250, i % 250 + 1])), ("kbr0", 0x0806, 0, 0, b"\xff" * 6))
        bcast.append((time.perf_counter() - t0) * 1000)
    for name, v in (("create + up", create), ("broadcast send", bcast)):
        print(f"{name}: first10 {statistics.median(v[:10]):.3f} ms, last10 {statistics.median(v[-10:]):.3f} ms")
    print("load", os.getloadavg())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
