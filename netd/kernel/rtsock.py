"""A raw NETLINK_ROUTE socket on the event loop, for the reads decoded by :mod:`netd.kernel.rtraw`.

A reconcile's observe reads the links netd owns and their addresses.  pyroute2 decodes every attribute of
every message (a bridge's RTM_NEWLINK is ~70 of them); the raw reader takes the ten netd uses.  The socket
asks for strict checking, so an address dump filtered by interface index is filtered in the kernel (without
it the kernel walks every interface: O(N) per connect).  A socket per observe: two observes never share one,
and a socket serves one dump at a time.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from types import TracebackType

from netd.kernel.rtraw import (
    NETLINK_ROUTE,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    Message,
    error_of,
    messages,
)

SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12
RECV_SIZE = 1 << 16  # a dump datagram is at most 32 KiB


class DumpInterrupted(OSError):
    """The table changed while it was dumped (NLM_F_DUMP_INTR): the answer may be inconsistent; ask again."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.EINTR, f"{what}: interrupted")


class RouteSocket:
    def __init__(self) -> None:
        flags = socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        self.sock = socket.socket(socket.AF_NETLINK, flags, NETLINK_ROUTE)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0

    def __enter__(self) -> RouteSocket:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.sock.close()

    async def ask(self, build: Callable[[int], bytes], what: str) -> list[tuple[Message, bytes]]:
        """Send the request ``build(seq)``; its answer's messages with their datagram (no NLMSG_DONE/acks).

        Raises the kernel's error as OSError, DumpInterrupted if a dump was inconsistent."""
        self.seq += 1
        seq = self.seq
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self.sock, build(seq))
        out: list[tuple[Message, bytes]] = []
        interrupted = False
        while True:
            data = await loop.sock_recv(self.sock, RECV_SIZE)
            for msg in messages(data):
                if msg.seq != seq:
                    continue  # an answer to an earlier request that was given up
                interrupted = interrupted or bool(msg.flags & NLM_F_DUMP_INTR)
                if msg.type == NLMSG_ERROR:
                    err = error_of(data, msg.start, what)
                    if err is not None:
                        raise err
                    return out
                if msg.type == NLMSG_DONE:
                    if interrupted:
                        raise DumpInterrupted(what)
                    return out
                out.append((msg, data))
                if not msg.flags & NLM_F_MULTI:  # the one answer to a get
                    return out
