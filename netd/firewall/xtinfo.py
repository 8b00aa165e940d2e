"""A cheap "did anyone change the legacy x_tables?" token for the iptables-legacy backend.

Legacy iptables has no generation counter.  ``IPT_SO_GET_INFO`` (``IP6T_SO_GET_INFO``) answers, per table, in
one ``getsockopt``: the hooks, the offsets of their entry points and underflows, the number of rules and the
size of the blob.  Every rule added or removed changes the count and the size; a flush, a replaced table or a
firewalld reload changes them too.  What it cannot see is a rule replaced by one of exactly the same size
(``iptables -R`` with the same match length): the daemon's full reconcile pass compares the whole save
(``in_sync(..., thorough=True)``) and catches that one there.

The socket is opened by the calling thread (the daemon's network namespace) and closed at once.
"""

from __future__ import annotations

import ctypes
import socket
import struct

IPT_SO_GET_INFO = 64  # same number for IP6T_SO_GET_INFO
_INFO = struct.Struct("=32sI5I5III")  # name, valid_hooks, hook_entry[5], underflow[5], num_entries, size
_LEVELS = {"ipv4": (socket.AF_INET, socket.IPPROTO_IP), "ipv6": (socket.AF_INET6, socket.IPPROTO_IPV6)}
TABLES = ("filter", "nat")

_libc: ctypes.CDLL | None = None


def _getsockopt(sock: socket.socket, level: int, buf: ctypes.Array[ctypes.c_char]) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    size = ctypes.c_uint(len(buf))
    rc = int(_libc.getsockopt(sock.fileno(), level, IPT_SO_GET_INFO, buf, ctypes.byref(size)))
    return 0 if rc == 0 else ctypes.get_errno()


def table_info(family: str) -> tuple[object, ...] | None:
    """(table, hooks, entries, underflows, rule count, size) per table of ``family``; None when unreadable."""
    domain, level = _LEVELS[family]
    out: list[object] = []
    try:
        with socket.socket(domain, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
            for table in TABLES:
                buf = ctypes.create_string_buffer(_INFO.pack(table.encode(), 0, *[0] * 10, 0, 0), _INFO.size)
                err = _getsockopt(sock, level, buf)
                if err:
                    out.append((table, "error", err))  # ENOENT: no such table (yet)
                    continue
                fields = _INFO.unpack(buf.raw)
                out.append((table, *fields[1:]))
    except OSError:
        return None
    return tuple(out)
