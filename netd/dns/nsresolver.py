"""Resolvers inside endpoint namespaces: ``127.0.0.11:53`` (UDP and TCP) in each namespace that has an endpoint
on a macvlan or ipvlan network (what they answer: ``netd.dns.nsindex``).

How: a fresh thread setns()es into the namespace, creates and binds the two sockets there and exits.  A socket
belongs to the namespace it was created in, wherever its fd goes, so the daemon's one event loop serves them
through ``DnsServer.attach``: the same code (answers, answer cache, upstream forwarding from the daemon's own
namespace, metrics) as the gateway resolvers, one UDP and one TCP socket per namespace, no thread or process
that lives on per namespace.  Why not Docker's DNAT from 127.0.0.11:53 to a random port: that is a firewall
table in every endpoint namespace (including ``--netns-path`` namespaces netd does not own) that netd would have
to observe and repair, and one more netlink round trip per connect; binding port 53 directly needs neither.
What it costs the user: a process in the namespace cannot bind ``*:53`` itself (its own DNS server: bind it to
the endpoint's address, as 127.0.0.11:53 is taken).

Lifetime: a listening socket keeps its namespace alive.  Sockets are closed when the namespace's last
macvlan/ipvlan endpoint goes (``sync`` after each change), when netd stops, and -- as a namespace can be deleted
under netd (``ip netns del``, the container's last process exits) -- when ``watch`` sees that no path netd was
given for it names it any more; the kernel then frees the namespace, and netd forgets its endpoints
(``on_vanished`` wakes the reconciler).  Restart and replay open them again (``sync`` of the replayed state).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from netd.core.epindex import EndpointIndex
from netd.core.model import DesiredState
from netd.dns.answer import NetIndex
from netd.dns.nsindex import NS_RESOLVER, NsIndex, WantedTracker, ns_index
from netd.dns.server import DnsServer, Local, _Listener, make_socket

log = structlog.get_logger()

T = TypeVar("T")
PORT = 53  # resolv.conf has no port: it must be 53
WATCH_INTERVAL = 1.0  # seconds between checks that each served namespace still has a path (stat per namespace)

Ident = tuple[int, int]  # (st_dev, st_ino) of the namespace
# (paths, fn): fn() in each network namespace in turn, from one short-lived thread; an OSError per path that
# failed (netd.kernel.netns.call_in_each)
CallInEach = Callable[[Sequence[str], Callable[[], T]], Awaitable[list[T | OSError]]]


@dataclass
class _Ns:
    ident: Ident
    paths: dict[str, str]  # target (Endpoint.target) -> path, every spelling it was connected by
    networks: frozenset[str]
    listener: _Listener | None = None
    clients: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def key(self) -> str:
        return f"ns:{self.ident[0]}:{self.ident[1]}"

    def describe(self) -> str:
        return ", ".join(sorted(self.paths.values()))

    def add_client(self, writer: asyncio.StreamWriter) -> None:
        """A TCP client connected; the ones that have gone are dropped here (their number stays small)."""
        self.clients = {w for w in self.clients if not w.is_closing()}
        self.clients.add(writer)


def _bound_pair() -> tuple[socket.socket, socket.socket, Ident]:
    """In the namespace's thread: the two sockets and the namespace they are in."""
    udp = make_socket(NS_RESOLVER, socket.SOCK_DGRAM, PORT)
    try:
        tcp = make_socket(NS_RESOLVER, socket.SOCK_STREAM, PORT)
    except OSError:
        udp.close()
        raise
    st = os.stat("/proc/thread-self/ns/net")
    return udp, tcp, (st.st_dev, st.st_ino)


class NsResolvers:
    def __init__(
        self,
        server: DnsServer,
        call_in_each: CallInEach[tuple[socket.socket, socket.socket, Ident]],
        netns_path: Callable[[str], str],
        ident_of: Callable[[str], Ident],
        on_vanished: Callable[[], None] = lambda: None,
    ) -> None:
        self.server = server
        self.call_in_each = call_in_each
        self.netns_path = netns_path  # netd netns name -> its path
        self.ident_of = ident_of  # path -> (st_dev, st_ino) of what it names now; OSError when nothing
        self.on_vanished = on_vanished
        self.spaces: dict[str, _Ns] = {}  # key -> namespace served
        self._by_target: dict[str, str] = {}  # target -> key
        self._lock = asyncio.Lock()
        self.wanted = WantedTracker()
        self._cache: dict[str, NetIndex] = {}  # network id -> its index, for the state ``_cache_of``
        self._cache_of: DesiredState | None = None
        self._waiting: set[str] = set()  # wanted targets without a resolver yet (path not there yet, or failed)
        self._failed: set[str] = set()  # targets whose open failed (logged; tried again when they change)
        server.extra_index = self._index

    def _index(self, state: DesiredState, local: Local) -> NsIndex | None:
        ns = self.spaces.get(local) if isinstance(local, str) else None
        if ns is None:
            return None
        if self._cache_of is not state or self.server.remote is not None:  # cluster names change by themselves
            self._cache_of, self._cache = state, {}
        return ns_index(state, ns.networks, f"netns {ns.describe()}", self.server.remote, self._cache)

    # -- which namespaces ----------------------------------------------------------------------------------

    def _path(self, state: DesiredState, target: str) -> tuple[str, int | None]:
        """The path of a target and, for a foreign namespace, the inode it had at connect time."""
        kind, _, rest = target.partition(":")
        if kind == "netns":
            return self.netns_path(rest), None
        ep = state.endpoints.get(self.wanted.an_endpoint(target) or "")
        return rest, ep.netns_inode if ep is not None else None

    async def sync(self, state: DesiredState, index: EndpointIndex | None = None) -> None:
        """Open resolvers in namespaces that need one, close those of namespaces that no longer do (only the
        namespaces whose endpoints changed are looked at, and those still waiting for their path; ``index``,
        the endpoint index of ``state``, names the changed endpoints)."""
        async with self._lock:
            changes = self.wanted.update(state, index)
            changed = False
            for target, nets in changes.items():
                key = self._by_target.get(target)
                if nets is None:
                    self._waiting.discard(target)
                    self._failed.discard(target)
                    if key is not None:
                        changed = True
                        ns = self.spaces[self._by_target.pop(target)]
                        del ns.paths[target]
                        if not ns.paths:
                            self._close(ns, "no endpoint of a macvlan/ipvlan network left")
                        else:
                            ns.networks = self._union(ns)
                elif key is not None:
                    ns = self.spaces[key]
                    ns.networks = self._union(ns)
                    changed = True
                else:
                    self._waiting.add(target)
                    self._failed.discard(target)
            if await self._open_waiting(state) or changed:
                self.server.invalidate()  # the namespaces' indexes follow the networks they serve

    async def _open_waiting(self, state: DesiredState) -> bool:
        """Open the resolvers of the waiting namespaces: all in one short-lived thread that setns()es into each
        in turn (a replay of 1000 namespaces starts one thread, not 1000)."""
        started = time.perf_counter()
        fresh: dict[str, _Ns] = {}
        changed = False
        for target in sorted(self._waiting - self._failed):
            nets = self.wanted.current.get(target)
            if target in self._by_target or nets is None:
                self._waiting.discard(target)
                continue
            path, inode = self._path(state, target)
            try:
                ident = self.ident_of(path)
            except OSError:
                continue  # not there (yet, or any more): tried again by the watch and at the next change
            if inode is not None and ident[1] != inode:
                continue  # the path names another namespace now (a reused PID): its endpoint is pruned
            key = f"ns:{ident[0]}:{ident[1]}"
            ns = self.spaces.get(key) or fresh.get(key)
            if ns is None:
                fresh[key] = _Ns(ident, {target: path}, nets)
                continue
            ns.paths[target] = path  # the same namespace under another spelling
            ns.networks = ns.networks | nets
            if key in self.spaces:
                self._by_target[target] = key
                self._waiting.discard(target)
                changed = True
        if not fresh:
            return changed
        todo = list(fresh.values())
        results = await self.call_in_each([next(iter(ns.paths.values())) for ns in todo], _bound_pair)
        ms = round((time.perf_counter() - started) * 1000 / len(todo), 2)
        for ns, result in zip(todo, results, strict=True):
            if isinstance(result, OSError):
                self._failed.update(ns.paths)
                log.error(
                    "ns_resolver_failed",
                    netns=ns.describe(),
                    address=f"{NS_RESOLVER}:{PORT}",
                    error=result.strerror or str(result),
                    hint="names do not resolve in this namespace; if a process there holds port 53, bind it to "
                    "the endpoint's address instead, then reconnect the endpoint",
                )
                continue
            udp, tcp, got = result
            if got != ns.ident:  # replaced between the look and the open: tried again by the watch
                udp.close()
                tcp.close()
                continue
            try:
                ns.listener = await self.server.attach(
                    ns.key, f"netns {ns.describe()}", udp, tcp, on_client=ns.add_client
                )
            except OSError as e:
                self._failed.update(ns.paths)
                log.error("ns_resolver_failed", netns=ns.describe(), error=str(e), hint="reconnect the endpoint")
                continue
            self.spaces[ns.key] = ns
            for target in ns.paths:
                self._by_target[target] = ns.key
                self._waiting.discard(target)
            changed = True
            log.info("ns_resolver_listening", netns=ns.describe(), address=f"{NS_RESOLVER}:{PORT}", ms=ms)
        return changed

    async def retry(self) -> None:
        """Open what waits for its namespace (a netd netns the reconciler made again, a path that appeared)."""
        async with self._lock:
            state = self.wanted.seen
            if state is not None and self._waiting - self._failed and await self._open_waiting(state):
                self.server.invalidate()

    def _union(self, ns: _Ns) -> frozenset[str]:
        return frozenset().union(*(self.wanted.current.get(t, frozenset()) for t in ns.paths))

    # -- closing -------------------------------------------------------------------------------------------

    def _close(self, ns: _Ns, why: str) -> None:
        self.spaces.pop(ns.key, None)
        for target in ns.paths:
            self._by_target.pop(target, None)
            if target in self.wanted.current:
                self._waiting.add(target)  # still wanted: opened again if its path names a namespace again
        if ns.listener is not None:
            ns.listener.udp.close()
            ns.listener.tcp.close()
        for w in list(ns.clients):  # an open TCP connection is a socket in the namespace too
            with contextlib.suppress(Exception):
                w.close()
        ns.clients.clear()
        log.info("ns_resolver_closed", netns=ns.describe(), reason=why)

    def check_vanished(self) -> int:
        """Close the resolvers of namespaces that no path names any more (deleted under netd): their sockets
        would keep them alive.  Returns how many were closed."""
        gone = []
        for ns in self.spaces.values():
            alive = False
            for path in ns.paths.values():
                with contextlib.suppress(OSError):
                    if self.ident_of(path) == ns.ident:
                        alive = True
                        break
            if not alive:
                gone.append(ns)
        for ns in gone:
            self._close(ns, "namespace deleted")
        if gone:
            self.on_vanished()
        return len(gone)

    async def watch(self, interval: float = WATCH_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.check_vanished()
                await self.retry()
            except Exception:
                log.exception("ns_resolver_watch_failed")

    async def close(self) -> None:
        for ns in list(self.spaces.values()):
            self._close(ns, "netd stops")
            if ns.listener is not None:
                with contextlib.suppress(Exception):
                    await ns.listener.tcp.wait_closed()
