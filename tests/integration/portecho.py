"""TCP and UDP echo for the published-port tests: ``portecho.py serve TAG PORT...`` / ``portecho.py send ...``.

``serve`` listens on every address (IPv4 and IPv6) of the namespace it runs in, on each PORT, for TCP and UDP,
prints "ready", and answers every message with ``TAG:<port>:<peer address>:<message>``.  ``send PROTO ADDR PORT``
sends one message and prints the answer (nothing, exit 1, when none came: refused or timed out).
"""

from __future__ import annotations

import selectors
import socket
import sys


def serve(tag: str, ports: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET6, kind)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            if kind == socket.SOCK_STREAM:
                s.listen(64)
            sel.register(s, selectors.EVENT_READ, (kind, port))
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            kind, port = key.data
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if kind == socket.SOCK_DGRAM:
                data, peer = s.recvfrom(2048)
                s.sendto(_answer(tag, port, peer[0], data), peer)
                continue
            conn, peer = s.accept()
            with conn:
                conn.settimeout(3)
                try:
                    data = conn.recv(2048)
                    conn.sendall(_answer(tag, port, peer[0], data))
                except OSError:
                    pass


def _answer(tag: str, port: int, peer: str, data: bytes) -> bytes:
    peer = peer.removeprefix("::ffff:")
    return f"{tag}:{port}:{peer}:".encode() + data


def send(proto: str, addr: str, port: int, timeout: float = 2.0) -> int:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        if proto == "tcp":
            with socket.create_connection((addr, port), timeout=timeout) as c:
                c.sendall(b"hello")
                out = c.recv(2048)
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as c:
                c.settimeout(timeout)
                c.sendto(b"hello", (addr, port))
                out, _ = c.recvfrom(2048)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out.decode())
    return 0 if out else 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
    else:
        sys.exit(send(sys.argv[2], sys.argv[3], int(sys.argv[4])))
