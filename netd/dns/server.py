"""The per-network resolver: an asyncio DNS server (UDP and TCP, port 53) inside the daemon.

Where it listens (aardvark-dns style): on each user-defined bridge network's gateway address, in the daemon's
own network namespace, where the bridges and their gateway addresses live.  Why not Docker's 127.0.0.11: that
needs a DNAT rule inside every endpoint namespace, impossible for ``--netns-path`` namespaces netd does not own;
the gateway is reachable from every endpoint as it is, and the local address a query arrives on says which
network asked, so names resolve only inside their own network.

Answers are computed from the current desired state (``get_state``), indexed lazily per state object, so a
name is resolvable as soon as the service commits it and no refresh is ever needed.  ``sync`` only opens
listeners for networks that appeared and closes those of networks that went: sockets survive config reloads
and reconciles (aardvark-dns lost queries by re-binding on every reload).  Sockets use IP_FREEBIND, so binding
never depends on whether the reconciler has put the gateway address on the bridge yet.

macvlan/ipvlan endpoints reach no address of the host: ``netd.dns.nsresolver`` opens 127.0.0.11:53 inside their
namespaces and hands the sockets to ``attach``; ``extra_index`` gives the index of such a listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, cast

import structlog

from netd.core.model import DesiredState, IPAddress
from netd.dns.answer import NetIndex, RemoteNames, answer, build_index, listen_addresses, reply, rotations
from netd.dns.upstream import Forwarder

TYPE_CHECKING = False
if TYPE_CHECKING:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rcode
else:
    from netd.dns.lazy import dns

log = structlog.get_logger()

PORT = 53
RCVBUF = 4 << 20  # bytes of queued UDP queries per listener
ANSWER_CACHE = 10000  # rendered answers kept per state (cleared when full or when the state changes)
TCP_IDLE = 10.0  # seconds a TCP client may stay silent before netd closes the connection
_IP_FREEBIND = 15  # <linux/in.h>; socket module lacks it
_SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>
_IPV6_FREEBIND = 78  # <linux/in6.h>

# where a query arrived: a gateway address, or the key of a namespace's own resolver (netd.dns.nsresolver)
Local = IPAddress | str


def make_socket(addr: IPAddress, kind: socket.SocketKind, port: int) -> socket.socket:
    """A bound (and for TCP listening) non-blocking socket in the calling thread's network namespace."""
    fam = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    s = socket.socket(fam, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if kind == socket.SOCK_DGRAM:
            # a burst of queries (every process of a namespace starting at once) must not overflow the
            # default ~200 KiB (~270 datagrams) queue; FORCE: above net.core.rmem_max (netd has CAP_NET_ADMIN)
            try:
                s.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RCVBUF)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if fam == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        s.bind((str(addr), port))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
    except OSError:
        s.close()
        raise
    return s


@dataclass
class _Listener:
    addr: Local
    network: str
    udp: asyncio.DatagramTransport
    tcp: asyncio.Server


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, local: Local) -> None:
        self.server = server
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        assert self.transport is not None
        self.server.on_datagram(self.transport, self.local, data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns_udp_error", address=str(self.local), error=str(exc))


class DnsServer:
    def __init__(self, get_state: Callable[[], DesiredState], forwarder: Forwarder, port: int = PORT) -> None:
        self.get_state = get_state
        self.forwarder = forwarder
        self.port = port
        self.listeners: dict[IPAddress, _Listener] = {}
        # the index of a query's arrival point no gateway has (a namespace's resolver): netd.dns.nsresolver
        self.extra_index: Callable[[DesiredState, Local], NetIndex | None] | None = None
        self._indexed: DesiredState | None = None
        self.remote: RemoteNames | None = None  # cluster mode: names of endpoints on other nodes
        self._index: dict[Local, NetIndex] = {}
        self._turn = 0
        # rendered local answers of the current state: (local address, tcp, query bytes after the ID) -> the
        # answer's rotations; a repeated query is answered without parsing or rendering again
        self._answers: dict[tuple[Local, bool, bytes], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.queries = 0
        # counts each query by result (answered, nxdomain, forwarded, refused, error) for the metrics
        self.on_query: Callable[[str], None] = lambda result: None

    def invalidate(self) -> None:
        """The names from outside the state changed (a cluster change): index again at the next query."""
        self._indexed = None
        self._answers.clear()

    # -- listeners ---------------------------------------------------------------------------------------------

    async def sync(self, state: DesiredState) -> None:
        """Open listeners for networks that appeared, close those of networks that went; keep the rest."""
        want = listen_addresses(state)
        for addr in [a for a in self.listeners if a not in want]:
            self._close(self.listeners.pop(addr))
        for addr, network in want.items():
            if addr in self.listeners:
                self.listeners[addr].network = network
                continue
            try:
                self.listeners[addr] = await self._open(addr, network)
            except OSError as e:
                log.error(
                    "dns_listen_failed",
                    network=network,
                    address=f"{addr}:{self.port}",
                    error=e.strerror or str(e),
                    hint="names of this network will not resolve; free the port (another DNS server?) "
                    "then reload netd (SIGHUP)",
                )

    async def _open(self, addr: IPAddress, network: str) -> _Listener:
        udp_sock = make_socket(addr, socket.SOCK_DGRAM, self.port)
        try:
            tcp_sock = make_socket(addr, socket.SOCK_STREAM, self.port)
        except OSError:
            udp_sock.close()
            raise
        lst = await self.attach(addr, network, udp_sock, tcp_sock)
        log.info("dns_listening", network=network, address=f"{addr}:{self.port}")
        return lst

    async def attach(
        self,
        local: Local,
        network: str,
        udp_sock: socket.socket,
        tcp_sock: socket.socket,
        on_client: Callable[[asyncio.StreamWriter], None] | None = None,
    ) -> _Listener:
        """Serve queries on two bound sockets (of any namespace); ``local`` says which index answers them;
        ``on_client`` sees each TCP client's writer (to close it with its listener)."""
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self, local), sock=udp_sock)
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            raise

        def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Coroutine[Any, Any, None]:
            if on_client is not None:
                on_client(w)
            return self._tcp_client(local, r, w)

        try:
            server = await asyncio.start_server(client, sock=tcp_sock, reuse_address=None)
        except BaseException:
            transport.close()
            tcp_sock.close()
            raise
        return _Listener(local, network, transport, server)

    def _close(self, lst: _Listener) -> None:
        lst.udp.close()
        lst.tcp.close()
        log.info("dns_stopped", network=lst.network, address=f"{lst.addr}:{self.port}")

    async def close(self) -> None:
        for lst in self.listeners.values():
            self._close(lst)
            await lst.tcp.wait_closed()
        self.listeners.clear()
        for t in list(self._tasks):
            t.cancel()

    # -- queries -----------------------------------------------------------------------------------------------

    def _network(self, local: Local) -> NetIndex | None:
        state = self.get_state()
        if state is not self._indexed:
            self._index = {}
            self._index.update(build_index(state, self.remote).items())
            self._indexed = state
            self._answers.clear()
        idx = self._index.get(local)
        if idx is None and self.extra_index is not None and (idx := self.extra_index(state, local)) is not None:
            self._index[local] = idx
        return idx

    def handle(
        self, data: bytes, local: Local, peer: str, tcp: bool = False
    ) -> tuple[bytes | None, dns.message.Message | None]:
        """(reply now, None) or (None, query to forward); (None, None): drop the packet."""
        self.queries += 1
        idx = self._network(local)
        allowed = idx is not None and idx.allows(ip_address(peer.split("%", 1)[0]))
        key = (local, tcp, data[2:])
        if allowed and (hit := self._answers.get(key)) is not None:
            self._turn += 1
            self.on_query(_result(hit[0]))
            return data[:2] + hit[self._turn % len(hit)][2:], None  # the cached answer with this query's ID
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            self.on_query("error")
            return _formerr(data), None
        if query.flags & dns.flags.QR:
            return None, None  # a response sent to a server: ignore it
        if idx is None or not allowed:
            self.on_query("refused")
            return _wire(reply(query, dns.rcode.REFUSED), query, tcp), None
        first = answer(query, idx, 0)
        if first is None:
            self.on_query("forwarded" if idx.forward else "refused")
            if not idx.forward:
                return _wire(reply(query, dns.rcode.REFUSED), query, tcp), None
            return None, query
        self.on_query("nxdomain" if first.rcode() == dns.rcode.NXDOMAIN else "answered")
        wires = [_wire(first, query, tcp)]
        for turn in range(1, rotations(query, idx)):
            r = answer(query, idx, turn)
            assert r is not None
            wires.append(_wire(r, query, tcp))
        if len(self._answers) >= ANSWER_CACHE:
            self._answers.clear()
        self._answers[key] = wires
        self._turn += 1
        return wires[self._turn % len(wires)], None

    def on_datagram(
        self, transport: asyncio.DatagramTransport, local: Local, data: bytes, addr: tuple[str | object, ...]
    ) -> None:
        now, fwd = self.handle(data, local, str(addr[0]))
        if now is not None:
            transport.sendto(now, addr)
        elif fwd is not None:
            self._spawn(self._forward_udp(transport, fwd, addr))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_udp(
        self, transport: asyncio.DatagramTransport, query: dns.message.Message, addr: tuple[str | object, ...]
    ) -> None:
        r = await self.forwarder.resolve(query, tcp=False)
        if not transport.is_closing():
            transport.sendto(_wire(r, query, tcp=False), addr)

    async def _tcp_client(self, local: Local, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), TCP_IDLE)
                now, fwd = self.handle(data, local, str(peer[0]), tcp=True)
                if fwd is not None:
                    now = _wire(await self.forwarder.resolve(fwd, tcp=True), fwd, tcp=True)
                if now is None:
                    continue
                writer.write(struct.pack("!H", len(now)) + now)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


def _result(wire: bytes) -> str:
    """The metrics label of a rendered local answer (its RCODE is the low 4 bits of byte 3)."""
    return "nxdomain" if wire[3] & 0x0F == dns.rcode.NXDOMAIN else "answered"


def _wire(r: dns.message.Message, query: dns.message.Message, tcp: bool) -> bytes:
    """``r`` rendered for the client: over UDP no larger than it can take (else truncated, TC set)."""
    limit = 65535 if tcp else max(512, query.payload if query.edns >= 0 else 512)
    return r.to_wire(max_size=limit, prefer_truncation=True, want_shuffle=False)  # keep our rotation


def _formerr(data: bytes) -> bytes | None:
    """FORMERR for a packet with a DNS header we could not parse further (dnspython builds the reply)."""
    if len(data) < 12:
        return None
    m = dns.message.Message(id=struct.unpack("!H", data[:2])[0])
    m.flags = dns.flags.QR
    m.set_rcode(dns.rcode.FORMERR)
    return m.to_wire()
