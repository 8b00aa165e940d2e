"""Load-balancer test client, run inside a namespace: ``lbclient.py PROTO ADDR PORT COUNT [SRC]`` makes COUNT
connections (TCP) or one-datagram exchanges from fresh sockets (UDP) and prints, per attempt, the monotonic
time it started and the answering server's tag (``-`` when none answered).  ``SRC`` binds the source address.
``lbclient.py udpflow ADDR PORT COUNT`` sends COUNT datagrams from ONE socket (one conntrack flow), one a line
read from stdin, so the test can change the rules between two datagrams of the same flow.
"""

from __future__ import annotations

import socket
import sys
import time


def once(proto: str, addr: str, port: int, src: str | None) -> str:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(1.0)
        if src:
            s.bind((src, 0))
        try:
            if proto == "tcp":
                s.connect((addr, port))
                s.sendall(b"x")
                data = s.recv(512)
            else:
                s.sendto(b"x", (addr, port))
                data, _ = s.recvfrom(512)
        except OSError:
            return "-"
    return data.decode().split(":", 1)[0] or "-"


def udpflow(addr: str, port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        for _ in range(count):
            sys.stdin.readline()
            s.sendto(b"x", (addr, port))
            try:
                data, _ = s.recvfrom(512)
                print(data.decode().split(":", 1)[0], flush=True)
            except OSError:
                print("-", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "udpflow":
        udpflow(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    proto, addr, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    src = sys.argv[5] if len(sys.argv) > 5 else None
    for _ in range(count):
        t = time.monotonic()
        print(f"{t:.6f} {once(proto, addr, port, src)}", flush=True)
