"""IPsec through netlink XFRM: ESP states (SAs) and policies for encrypted overlays, and a probe for ESP + AEAD.

pyroute2 0.9 has no XFRM API (only the ``xfrm`` interface kind), so the messages are declared here on pyroute2's
own ``nlmsg``/``nla`` classes (the structs of ``<linux/xfrm.h>``, nested structs flattened, x86-64 layout) and
sent on a raw NETLINK_XFRM socket driven by asyncio (:class:`netd.kernel.rtsock.RouteSocket`'s request loop).
No ``ip xfrm`` process is ever started.

Only netd's own objects are read back (reqid / mark with the top byte 0x6E, see :mod:`netd.core.ipsecspec`); every
write names one object exactly, so foreign IPsec configuration is never changed.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable
from ipaddress import ip_address
from typing import Any

from pyroute2.netlink import nla, nlmsg

from netd.core.errors import KernelError
from netd.core.ipsecspec import (
    AEAD_ALGO,
    FULL_MASK,
    ICV_BITS,
    KEY_BYTES,
    MIN_SPI,
    SALT_BYTES,
    Addr,
    DesiredXfrm,
    EspPolicy,
    EspSA,
    is_owned,
)
from netd.kernel import netns as nsops
from netd.kernel.nlerror import kernel_error
from netd.kernel.rtraw import NLMSG_DONE, NLMSG_ERROR, messages
from netd.kernel.rtsock import RouteSocket

NETLINK_XFRM = 6
XFRM_MSG_NEWSA, XFRM_MSG_DELSA, XFRM_MSG_GETSA = 0x10, 0x11, 0x12
XFRM_MSG_NEWPOLICY, XFRM_MSG_DELPOLICY, XFRM_MSG_GETPOLICY = 0x13, 0x14, 0x15
XFRM_MSG_UPDPOLICY, XFRM_MSG_UPDSA = 0x19, 0x1A
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
IPPROTO_ESP = 50
XFRM_MODE_TRANSPORT = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_ALLOW = 0
XFRM_INF = (1 << 64) - 1
REPLAY_WINDOW = 32
TMPL = struct.Struct("=16s4sB3xH2x16sIBBBxIII")  # struct xfrm_user_tmpl (64 bytes)
AEAD = struct.Struct("=64sII")  # struct xfrm_algo_aead without the key

ESP_MISSING = (
    "this kernel lacks esp4/rfc4106(gcm(aes)): load esp4 (modprobe esp4) or run on a kernel with IPsec ESP"
)

_SELECTOR = (
    ("sel_daddr", "16s"),
    ("sel_saddr", "16s"),
    ("sel_dport", ">H"),
    ("sel_dport_mask", ">H"),
    ("sel_sport", ">H"),
    ("sel_sport_mask", ">H"),
    ("sel_family", "H"),
    ("sel_prefixlen_d", "B"),
    ("sel_prefixlen_s", "B"),
    ("sel_proto", "B"),
    ("__pad_sel", "3x"),
    ("sel_ifindex", "i"),
    ("sel_user", "I"),
)
_LIFETIME_CFG = tuple((f"lft_{n}", "Q") for n in ("sb", "hb", "sp", "hp", "sat", "hat", "sut", "hut"))
_LIFETIME_CUR = tuple((f"cur_{n}", "Q") for n in ("bytes", "packets", "add_time", "use_time"))

_NLA_MAP = (
    (0, "XFRMA_UNSPEC", "none"),
    (5, "XFRMA_TMPL", "cdata"),
    (18, "XFRMA_ALG_AEAD", "cdata"),
    (21, "XFRMA_MARK", "xfrm_mark"),
)


class _XfrmMsg(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    nla_map = _NLA_MAP
    defaults = {name: bytes(16) for name in ("sel_daddr", "sel_saddr", "id_daddr", "saddr", "daddr")}

    class xfrm_mark(nla):  # type: ignore[misc]
        fields = (("v", "I"), ("m", "I"))


class xfrm_usersa_info(_XfrmMsg):
    fields = (
        *_SELECTOR,
        ("id_daddr", "16s"),
        ("id_spi", ">I"),
        ("id_proto", "B"),
        ("__pad_id", "3x"),
        ("saddr", "16s"),
        *_LIFETIME_CFG,
        *_LIFETIME_CUR,
        ("stats_replay_window", "I"),
        ("stats_replay", "I"),
        ("stats_integrity_failed", "I"),
        ("seq", "I"),
        ("reqid", "I"),
        ("family", "H"),
        ("mode", "B"),
        ("replay_window", "B"),
        ("flags", "B"),
        ("__pad_end", "7x"),
    )


class xfrm_usersa_id(_XfrmMsg):
    fields = (("daddr", "16s"), ("spi", ">I"), ("family", "H"), ("proto", "B"), ("__pad", "x"))


class xfrm_userpolicy_info(_XfrmMsg):
    fields = (
        *_SELECTOR,
        *_LIFETIME_CFG,
        *_LIFETIME_CUR,
        ("priority", "I"),
        ("index", "I"),
        ("dir", "B"),
        ("action", "B"),
        ("flags", "B"),
        ("share", "B"),
        ("__pad_end", "4x"),
    )


class xfrm_userpolicy_id(_XfrmMsg):
    fields = (*_SELECTOR, ("index", "I"), ("dir", "B"), ("__pad", "3x"))


def _family(addr: Addr) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def _raw(addr: Addr) -> bytes:
    return addr.packed.ljust(16, b"\0")


def _addr(raw: bytes, family: int) -> Addr:
    return ip_address(raw[:4] if family == socket.AF_INET else raw[:16])


def _encode(msg: Any, mtype: int, flags: int, seq: int) -> bytes:
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def _infinite(msg: Any) -> None:
    for name in ("sb", "hb", "sp", "hp"):  # 0 would mean "expire after 0 bytes/packets"
        msg[f"lft_{name}"] = XFRM_INF


def _selector(msg: Any, pol: EspPolicy) -> None:
    bits = 32 if pol.src.version == 4 else 128
    msg["sel_daddr"], msg["sel_saddr"] = _raw(pol.dst), _raw(pol.src)
    msg["sel_dport"], msg["sel_dport_mask"] = pol.dport, 0xFFFF
    msg["sel_family"], msg["sel_prefixlen_d"], msg["sel_prefixlen_s"] = _family(pol.src), bits, bits
    msg["sel_proto"] = pol.proto


def _mark(pol: EspPolicy) -> tuple[str, dict[str, int]]:
    return ("XFRMA_MARK", {"v": pol.mark, "m": pol.mark_mask})


def sa_request(sa: EspSA, seq: int, update: bool = False) -> bytes:
    msg = xfrm_usersa_info()
    msg["sel_family"] = _family(sa.src)
    msg["id_daddr"], msg["id_spi"], msg["id_proto"] = _raw(sa.dst), sa.spi, IPPROTO_ESP
    msg["saddr"], msg["reqid"], msg["family"] = _raw(sa.src), sa.reqid, _family(sa.src)
    msg["mode"], msg["replay_window"] = XFRM_MODE_TRANSPORT, REPLAY_WINDOW
    _infinite(msg)
    key = sa.key + sa.salt
    aead = AEAD.pack(sa.algo.encode(), len(key) * 8, sa.icv_bits) + key
    msg["attrs"] = [("XFRMA_ALG_AEAD", aead)]
    mtype, flags = (XFRM_MSG_UPDSA, 0) if update else (XFRM_MSG_NEWSA, NLM_F_CREATE | NLM_F_EXCL)
    return _encode(msg, mtype, NLM_F_REQUEST | NLM_F_ACK | flags, seq)


def sa_delete_request(sa: EspSA, seq: int) -> bytes:
    msg = xfrm_usersa_id()
    msg["daddr"], msg["spi"], msg["family"], msg["proto"] = _raw(sa.dst), sa.spi, _family(sa.dst), IPPROTO_ESP
    return _encode(msg, XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK, seq)


def policy_request(pol: EspPolicy, seq: int, update: bool = False) -> bytes:
    msg = xfrm_userpolicy_info()
    _selector(msg, pol)
    _infinite(msg)
    msg["priority"], msg["dir"], msg["action"] = pol.priority, XFRM_POLICY_OUT, XFRM_POLICY_ALLOW
    tmpl = TMPL.pack(
        _raw(pol.dst), pol.tmpl_spi.to_bytes(4, "big"), IPPROTO_ESP, _family(pol.src), _raw(pol.src), pol.reqid,
        XFRM_MODE_TRANSPORT, 0, 0, FULL_MASK, FULL_MASK, FULL_MASK,
    )  # fmt: skip
    msg["attrs"] = [("XFRMA_TMPL", tmpl), _mark(pol)]
    mtype, flags = (XFRM_MSG_UPDPOLICY, 0) if update else (XFRM_MSG_NEWPOLICY, NLM_F_CREATE | NLM_F_EXCL)
    return _encode(msg, mtype, NLM_F_REQUEST | NLM_F_ACK | flags, seq)


def policy_delete_request(pol: EspPolicy, seq: int) -> bytes:
    msg = xfrm_userpolicy_id()
    _selector(msg, pol)
    msg["dir"] = XFRM_POLICY_OUT
    msg["attrs"] = [_mark(pol)]
    return _encode(msg, XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq)


def dump_request(mtype: int, seq: int) -> bytes:
    body = xfrm_usersa_id() if mtype == XFRM_MSG_GETSA else xfrm_userpolicy_id()
    return _encode(body, mtype, NLM_F_REQUEST | NLM_F_DUMP, seq)


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def decode_sa(data: bytes) -> EspSA | None:
    """One XFRM_MSG_NEWSA of a dump as an EspSA, or None if it is not netd's (reqid) or not ESP with an AEAD."""
    msg = xfrm_usersa_info(data)
    msg.decode()
    aead = _attr(msg, "XFRMA_ALG_AEAD")
    if not is_owned(msg["reqid"]) or msg["id_proto"] != IPPROTO_ESP or aead is None:
        return None
    name, key_bits, icv = AEAD.unpack_from(aead)
    key = aead[AEAD.size : AEAD.size + key_bits // 8]
    fam = msg["family"]
    return EspSA(
        _addr(msg["saddr"], fam), _addr(msg["id_daddr"], fam), msg["id_spi"], key[:KEY_BYTES],
        key[KEY_BYTES:KEY_BYTES + SALT_BYTES], msg["reqid"], icv, name.rstrip(b"\0").decode(),
    )  # fmt: skip


def decode_policy(data: bytes) -> EspPolicy | None:
    """One XFRM_MSG_NEWPOLICY of a dump as an EspPolicy, or None if it is not one of netd's out policies."""
    msg = xfrm_userpolicy_info(data)
    msg.decode()
    tmpl, mark = _attr(msg, "XFRMA_TMPL"), _attr(msg, "XFRMA_MARK")
    if msg["dir"] != XFRM_POLICY_OUT or not tmpl or mark is None or len(tmpl) != TMPL.size:
        return None
    (_, spi_raw, proto, _, _, reqid, *_rest) = TMPL.unpack(tmpl)
    spi = int.from_bytes(spi_raw, "big")
    if proto != IPPROTO_ESP or not is_owned(reqid) or not is_owned(mark["v"]):
        return None
    fam = msg["sel_family"]
    return EspPolicy(
        _addr(msg["sel_saddr"], fam), _addr(msg["sel_daddr"], fam), spi, reqid, mark["v"], mark["m"],
        msg["sel_dport"], msg["sel_proto"], "out", msg["priority"],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- the socket


class XfrmSocket(RouteSocket):
    """A NETLINK_XFRM socket on the event loop (RouteSocket's request/ack/dump loop, another protocol)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0


def _xfrm_fd() -> int:
    flags = socket.SOCK_RAW | socket.SOCK_CLOEXEC
    return socket.socket(socket.AF_NETLINK, flags, NETLINK_XFRM).detach()


def _xfrm_fd_in(path: str) -> int:
    nsops.setns_net(path)
    return _xfrm_fd()


async def open_xfrm(netns_path: str | None = None) -> XfrmSocket:
    """An XFRM socket in the event loop's netns, or in the one at ``netns_path`` (opened by a fresh thread)."""
    try:
        fd = _xfrm_fd() if netns_path is None else await nsops.in_fresh_thread(lambda: _xfrm_fd_in(netns_path))
    except OSError as exc:
        if exc.errno == errno.EPROTONOSUPPORT:
            raise KernelError("this kernel has no XFRM netlink (xfrm_user): load xfrm_user") from exc
        raise kernel_error("xfrm socket", "open", exc) from exc
    sock = socket.socket(fileno=fd)
    try:
        sock.setblocking(False)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return XfrmSocket(sock)


def _error(obj: object, action: str, exc: OSError) -> KernelError:
    if exc.errno in (errno.EPROTONOSUPPORT, errno.ENOSYS, errno.ENOENT) and isinstance(obj, EspSA):
        return KernelError(f"{obj}: {action} failed: {os.strerror(exc.errno or 0)}; {ESP_MISSING}")
    return kernel_error(str(obj), action, exc)


async def add_sa(xs: XfrmSocket, sa: EspSA, update: bool = False) -> None:
    try:
        await xs.ask(lambda seq: sa_request(sa, seq, update), str(sa))
    except OSError as exc:
        raise _error(sa, "update" if update else "add", exc) from exc


async def delete_sa(xs: XfrmSocket, sa: EspSA, missing_ok: bool = True) -> None:
    try:
        await xs.ask(lambda seq: sa_delete_request(sa, seq), str(sa))
    except OSError as exc:
        if not (missing_ok and exc.errno in (errno.ESRCH, errno.ENOENT)):
            raise _error(sa, "delete", exc) from exc


async def add_policy(xs: XfrmSocket, pol: EspPolicy, update: bool = False) -> None:
    try:
        await xs.ask(lambda seq: policy_request(pol, seq, update), str(pol))
    except OSError as exc:
        raise _error(pol, "update" if update else "add", exc) from exc


async def delete_policy(xs: XfrmSocket, pol: EspPolicy, missing_ok: bool = True) -> None:
    try:
        await xs.ask(lambda seq: policy_delete_request(pol, seq), str(pol))
    except OSError as exc:
        if not (missing_ok and exc.errno == errno.ENOENT):
            raise _error(pol, "delete", exc) from exc


async def observe_xfrm(xs: XfrmSocket) -> DesiredXfrm:
    """netd's own SAs and out policies (reqid/mark 0x6E......); everything else in the kernel is skipped."""
    sas: set[EspSA] = set()
    pols: set[EspPolicy] = set()
    try:
        for msg, data in await xs.ask(lambda seq: dump_request(XFRM_MSG_GETSA, seq), "xfrm state dump"):
            sa = decode_sa(data[msg.start - 16 : msg.end])
            if sa is not None:
                sas.add(sa)
        for msg, data in await xs.ask(lambda seq: dump_request(XFRM_MSG_GETPOLICY, seq), "xfrm policy dump"):
            pol = decode_policy(data[msg.start - 16 : msg.end])
            if pol is not None:
                pols.add(pol)
    except OSError as exc:
        raise kernel_error("xfrm", "dump", exc) from exc
    return DesiredXfrm(frozenset(sas), frozenset(pols))


Action = tuple[str, EspSA | EspPolicy]


async def apply_xfrm(xs: XfrmSocket, actions: Iterable[Action]) -> None:
    """Apply the ordered actions of :func:`netd.drivers.overlay_crypto.plan_xfrm`, stopping at the first error."""
    for what, obj in actions:
        if isinstance(obj, EspSA):
            await (add_sa(xs, obj) if what == "add_sa" else delete_sa(xs, obj))
        elif what == "del_policy":
            await delete_policy(xs, obj)
        else:
            await add_policy(xs, obj, update=what == "update_policy")


# ---------------------------------------------------------------------------------------------- the probe

_PROBE_SA = EspSA(
    ip_address("127.0.0.1"), ip_address("127.0.0.1"), MIN_SPI, bytes(KEY_BYTES), bytes(SALT_BYTES), 0x6E000001,
    ICV_BITS, AEAD_ALGO,
)  # fmt: skip


def _probe_blocking() -> None:
    """In a fresh thread: a brand-new netns (gone with the thread), one ESP/AEAD SA added there."""
    nsops.unshare_net()
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_XFRM)
    except OSError as exc:
        raise KernelError("this kernel has no XFRM netlink (xfrm_user): load xfrm_user") from exc
    with sock:
        sock.bind((0, 0))
        sock.send(sa_request(_PROBE_SA, 1))
        data = sock.recv(65536)
    for msg in messages(data):
        if msg.type == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, msg.start)
            if err in (-errno.EPROTONOSUPPORT, -errno.ENOSYS, -errno.ENOENT):
                raise KernelError(f"{ESP_MISSING} (the kernel answered: {errno.errorcode.get(-err, -err)})")
            if err:
                raise kernel_error("esp probe", "add SA", OSError(-err, ""))
            return
        if msg.type == NLMSG_DONE:
            return


async def probe_esp() -> None:
    """Raise KernelError with :data:`ESP_MISSING` unless this kernel can do ESP with rfc4106(gcm(aes))."""
    await nsops.in_fresh_thread(_probe_blocking, name="netd-esp-probe")
