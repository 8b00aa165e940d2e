"""The kernel facade's sockets (part of ``netd.kernel.facade.Kernel``): the reconciler's socket in the daemon's
namespace, and a small cache of sockets into other network namespaces.

Sockets into other namespaces are made fork-free: a fresh thread ``setns()``es, creates a NETLINK_ROUTE datagram
socket and hands the fd to ``AsyncIPRoute(fileno=...)`` in the event loop's thread (about 1 ms, against 25-40 ms
for pyroute2's fork-based ``netns=``).  An open socket keeps its namespace alive: a container runtime's namespace
whose last process exited, or a named mount removed by hand, would stay (with its veth on the bridge and its
address taken) for as long as netd held a socket in it.  So the reconciler releases them all at the end of each
pass (``release_netns_sockets``), and a validation read outside a pass uses a socket of its own for the call.
Then the namespace really goes, the kernel deletes the host side of its veth, and that event (about an owned
link) starts the pass that forgets the endpoint.  Each use of a cached socket also checks that the path still
names the same nsfs inode; a removed or replaced namespace evicts the entry.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog
from pyroute2.iproute.linux import AsyncIPRoute

from netd.core.errors import KernelError
from netd.kernel import netns as nsops
from netd.kernel.nlerror import kernel_error

log = structlog.get_logger()


# Sockets into other namespaces are cheap to open (~1 ms) but each holds buffers and keeps its namespace (and the
# links in it) alive after the namespace's file is gone: keep only the most recently used ones.
MAX_NS_SOCKETS = 64


@dataclass
class _NsSocket:
    ipr: Any  # AsyncIPRoute
    inode: tuple[int, int]  # (st_dev, st_ino) of the nsfs file when the socket was opened


async def open_socket() -> Any:
    ipr = AsyncIPRoute()
    await ipr.setup_endpoint()
    return ipr


class KernelSockets:
    """The sockets of ``Kernel`` (which sets these attributes up in its ``__init__``)."""

    _host: Any  # the reconciler's AsyncIPRoute in the daemon's netns, opened at first use
    _opening: asyncio.Lock
    _ns: OrderedDict[str, _NsSocket]  # netns path -> socket, least recently used first

    async def _host_socket(self) -> Any:
        async with self._opening:  # tasks racing at start-up share one socket
            if self._host is None:
                self._host = await open_socket()
        return self._host

    async def _adopt_fd(self, path: str, fd: int) -> Any:
        ipr = AsyncIPRoute(fileno=fd)
        try:
            await ipr.setup_endpoint()
            inode = nsops.ns_inode(path)
        except BaseException:
            ipr.close()
            raise
        self._drop(path)
        self._ns[path] = _NsSocket(ipr, inode)
        while len(self._ns) > MAX_NS_SOCKETS:  # least recently used first: a socket pins its namespace
            self._drop(next(iter(self._ns)))
        return ipr

    async def ns_socket(self, path: str) -> Any:
        """A cached request socket inside the netns at ``path``; never creates a namespace."""
        entry = self._ns.get(path)
        try:
            inode = nsops.ns_inode(path)
        except OSError as exc:
            self._drop(path)
            raise kernel_error(f"netns {path}", "open", exc, "the namespace does not exist (any more)") from exc
        if entry is not None:
            if entry.inode == inode:
                self._ns.move_to_end(path)
                return entry.ipr
            self._drop(path)  # the name now points at another namespace
        if not nsops.ns_alive(path):
            raise KernelError(f"netns {path}: open failed: not a network namespace file; remove the stale file")
        try:
            fd = await nsops.in_fresh_thread(lambda: nsops.netlink_fd_in(path), name="netd-nsopen")
        except OSError as exc:
            raise kernel_error(f"netns {path}", "open", exc) from exc
        log.debug("netns_socket_opened", netns=path)
        return await self._adopt_fd(path, fd)

    def _drop(self, path: str) -> None:
        entry = self._ns.pop(path, None)
        if entry is not None:
            entry.ipr.close()

    def forget_netns(self, path: str) -> None:
        """Evict the cached socket (call after an error that suggests the namespace is gone)."""
        self._drop(path)

    def release_netns_sockets(self) -> None:
        """Close every socket into another namespace, so none keeps a deleted namespace alive.  The reconciler
        calls it at the end of each pass, under its lock (the only user of the cached sockets)."""
        for path in list(self._ns):
            self._drop(path)

    async def close(self) -> None:
        for path in list(self._ns):
            self._drop(path)
        if self._host is not None:
            self._host.close()
            self._host = None
