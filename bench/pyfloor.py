"""The one-process Python-netlink floor (issue 14): the kernel work of a netd connect, done by a plain Python
program on raw rtnetlink sockets (``struct``, no pyroute2, no daemon, no API, no state file, no firewall).

Per endpoint, the same requests netd makes: create the veth with its peer made inside the namespace and the
host side on the bridge (one RTM_NEWLINK), read the host side back for its index and the peer's (RTM_GETLINK),
then inside the namespace (a socket opened there with ``setns``) the addresses, link-up and default route in one
datagram, then the host side up.  ``PyFloor`` is the per-connect tool for compare.py (``--tools pyfloor``);
``replay`` does a cold replay's kernel work (namespaces, bridges, veths, namespace side, one ``nft -f``) for
replay.py.  Nothing imports netd: this is what any Python program doing the same thing would pay.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Interface, ip_address, ip_interface

NLMSG = struct.Struct("=IHHII")
NLATTR = struct.Struct("=HH")
IFINFO = struct.Struct("=BxHiII")
IFADDR = struct.Struct("=BBBBI")
RTMSG = struct.Struct("=BBBBBBBBI")
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x200, 0x400
NLMSG_ERROR = 2
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 5, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
IFF_UP = 1
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000

_libc = ctypes.CDLL(None, use_errno=True)


def attr(atype: int, value: bytes) -> bytes:
    out = NLATTR.pack(NLATTR.size + len(value), atype) + value
    return out + b"\0" * (-len(out) % 4)


def text(value: str) -> bytes:
    return value.encode() + b"\0"


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


class Nl:
    """A NETLINK_ROUTE socket: ``ask`` sends messages in one datagram and waits for one answer each."""

    def __init__(self, fd: int | None = None) -> None:
        self.sock = (
            socket.socket(fileno=fd) if fd is not None else socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        )
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def ask(self, msgs: Sequence[tuple[int, int, bytes]]) -> list[bytes]:
        """(type, flags, body) each; returns the answers' payloads in order (an ack: b""); raises on an error."""
        data = bytearray()
        first = self.seq + 1
        for mtype, flags, body in msgs:
            self.seq += 1
            data += NLMSG.pack(NLMSG.size + len(body), mtype, flags | NLM_F_REQUEST, self.seq, 0) + body
        self.sock.send(bytes(data))
        answers: dict[int, bytes] = {}
        while len(answers) < len(msgs):
            buf = self.sock.recv(65536)
            pos = 0
            while pos + NLMSG.size <= len(buf):
                length, mtype, _flags, seq, _pid = NLMSG.unpack_from(buf, pos)
                payload = buf[pos + NLMSG.size : pos + length]
                pos += (length + 3) & ~3
                if seq < first or seq in answers:
                    continue  # a get's ack after its answer
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    answers[seq] = b""
                else:
                    answers[seq] = payload
        return [answers[s] for s in range(first, self.seq + 1)]


def link_attrs(payload: bytes) -> tuple[int, dict[int, bytes]]:
    _f, _t, index, _flags, _change = IFINFO.unpack_from(payload)
    out: dict[int, bytes] = {}
    pos = IFINFO.size
    while pos + NLATTR.size <= len(payload):
        alen, atype = NLATTR.unpack_from(payload, pos)
        if alen < NLATTR.size:
            break
        out[atype & 0x3FFF] = payload[pos + NLATTR.size : pos + alen]
        pos += (alen + 3) & ~3
    return index, out


def new_veth(host: str, peer: str, nsfd: int, master: int, mac: bytes | None = None) -> tuple[int, int, bytes]:
    peer_body = IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, text(peer)) + attr(IFLA_NET_NS_FD, u32(nsfd))
    if mac is not None:
        peer_body += attr(IFLA_ADDRESS, mac)
    info = attr(IFLA_INFO_KIND, text("veth")) + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_body))
    body = IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, text(host)) + attr(IFLA_MASTER, u32(master))
    return RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body + attr(IFLA_LINKINFO, info)


def get_link(name: str) -> tuple[int, int, bytes]:
    return RTM_GETLINK, 0, IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, text(name))


def set_up(index: int) -> tuple[int, int, bytes]:
    return RTM_NEWLINK, NLM_F_ACK, IFINFO.pack(0, 0, index, IFF_UP, IFF_UP)


def new_bridge(name: str) -> tuple[int, int, bytes]:
    body = IFINFO.pack(0, 0, 0, 0, 0) + attr(IFLA_IFNAME, text(name))
    return RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body + attr(IFLA_LINKINFO, attr(1, text("bridge")))


def add_addr(index: int, iface: IPv4Interface) -> tuple[int, int, bytes]:
    raw = iface.ip.packed
    body = IFADDR.pack(socket.AF_INET, iface.network.prefixlen, 0, 0, index)
    body += attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
    return RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body


def default_route(index: int, gateway: str) -> tuple[int, int, bytes]:
    body = RTMSG.pack(socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
    body += attr(RTA_GATEWAY, ip_address(gateway).packed) + attr(RTA_OIF, u32(index))
    return RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


@contextlib.contextmanager
def entered(nsfd: int) -> Iterator[None]:
    """The calling thread inside the namespace ``nsfd`` for the block, then back where it was."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(nsfd, CLONE_NEWNET), "setns")
        try:
            yield
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns back")
    finally:
        os.close(home)


def socket_in(nsfd: int) -> Nl:
    with entered(nsfd):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    return Nl(sock.detach())


def connect(
    host: Nl, bridge: int, nspath: str, hostname: str, iface: IPv4Interface, gateway: str, lo: bool = False
) -> None:
    """One endpoint: the kernel work of a netd connect (``lo``: bring the namespace's lo up too)."""
    nsfd = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
    try:
        host.ask([new_veth(hostname, "eth0", nsfd, bridge)])
        index, attrs = link_attrs(host.ask([get_link(hostname)])[0])
        peer = struct.unpack("=I", attrs[IFLA_LINK][:4])[0]
        ns = socket_in(nsfd)
    finally:
        os.close(nsfd)
    try:
        msgs = [set_up(1)] if lo else []
        ns.ask([*msgs, add_addr(peer, iface), set_up(peer), default_route(peer, gateway)])
    finally:
        ns.close()
    host.ask([set_up(index)])


def bridge_up(host: Nl, name: str, iface: IPv4Interface) -> int:
    host.ask([new_bridge(name)])
    index, _ = link_attrs(host.ask([get_link(name)])[0])
    host.ask([add_addr(index, iface), set_up(index)])
    return index


def make_netns(paths: Sequence[str]) -> None:
    """Named namespaces as ``ip netns add`` makes them (the directory is already a shared mount): from one
    throw-away thread that unshare()s a new namespace per path and bind-mounts it."""
    err: list[BaseException] = []

    def run() -> None:
        try:
            for path in paths:
                os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
                _check(_libc.unshare(CLONE_NEWNET), "unshare")
                me = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
                _check(_libc.mount(me, path.encode(), None, MS_BIND, None), "mount")
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if err:
        raise err[0]


class PyFloor:
    """compare.py's tool: the connect's kernel work, one process, raw netlink; the bridge and its address are
    made once, untimed.  Detach deletes the host side (the peer goes with it), as netd's disconnect does."""

    name = "python-netlink (floor)"

    def __init__(self, netns: list[str], subnet: str, gateway: str, ip_of: object) -> None:
        self.netns = netns
        self.gateway = gateway
        self.prefix = ip_interface(subnet).network.prefixlen
        self.ip_of = ip_of
        self.host: Nl
        self.bridge = 0

    def prepare(self, n: int) -> None:
        self.host = Nl()  # here: prepare runs inside the tool's outer namespace
        self.bridge = bridge_up(self.host, "pf-bench0", IPv4Interface(f"{self.gateway}/{self.prefix}"))

    def attach(self, i: int) -> None:
        iface = IPv4Interface(f"{self.ip_of(i)}/{self.prefix}")  # type: ignore[operator]
        connect(self.host, self.bridge, f"/run/netns/{self.netns[i]}", f"pf{i}", iface, self.gateway)

    def detach(self, i: int) -> None:
        index, _ = link_attrs(self.host.ask([get_link(f"pf{i}")])[0])
        try:
            self.host.ask([(17, NLM_F_ACK, IFINFO.pack(0, 0, index, 0, 0))])  # RTM_DELLINK
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                raise
