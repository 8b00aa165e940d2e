"""Named network namespaces and per-thread namespace tricks, without the ``ip`` command.

Everything that changes a thread's namespace (``unshare``/``setns``) runs in a *fresh, short-lived* thread
(:func:`in_fresh_thread`): the main thread and pooled executor threads never leave the daemon's namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import stat
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from netd.core.linkspec import NsProbe
from netd.kernel import rtwrite
from netd.kernel.mountns import HostMount

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
NS_GET_NSTYPE = 0xB703
NETLINK_ROUTE = 0
LOOPBACK_INDEX = 1
OWN_NS = "/proc/thread-self/ns/net"  # the calling thread's: netd's own in the event loop's thread
INIT_NS = "/proc/1/ns/net"  # the host's initial namespace (unreadable when PID 1 holds more capabilities)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


def _check(rc: int, what: str, path: str = "") -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path or None)


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    src = source.encode() if source is not None else None
    fst = fstype.encode() if fstype is not None else None
    _check(_libc.mount(src, target.encode(), fst, flags, None), "mount", target)


def umount_detach(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), "umount2", target)


def setns_net(path: str) -> None:
    """Move the *calling thread* into the network namespace at ``path``."""
    fd = open_netns(path)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns", path)
    finally:
        os.close(fd)


def return_to(fd: int, inode: int) -> bool:
    """Move the calling thread back into the network namespace ``fd`` (its nsfs inode ``inode``); True if it
    is there now."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        return False
    try:
        return os.stat(OWN_NS).st_ino == inode
    except OSError:
        return False


def unshare_net() -> None:
    """Give the *calling thread* a brand-new network namespace."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare")


def thread_ns_path() -> str:
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


async def in_fresh_thread(
    fn: Callable[[], T], name: str = "netd-ns", after: Callable[[], None] | None = None
) -> T:
    """Run ``fn`` in a new thread that dies afterwards (so a setns() never leaks into a pooled thread).

    ``after``: called in that thread once ``fn``'s result is handed back, whatever it was (slow cleanup the
    caller need not wait for, such as closing sockets); its errors are ignored."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def deliver(ok: bool, value: object) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)  # type: ignore[arg-type]
        else:
            assert isinstance(value, BaseException)
            fut.set_exception(value)

    def run() -> None:
        try:
            result: object = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(deliver, False, exc)
        else:
            loop.call_soon_threadsafe(deliver, True, result)
        if after is not None:
            with contextlib.suppress(Exception):
                after()

    threading.Thread(target=run, name=name, daemon=True).start()
    return await fut


async def call_in_each(paths: Sequence[str], fn: Callable[[], T], name: str = "netd-nscall") -> list[T | OSError]:
    """``fn()`` in each network namespace of ``paths`` in turn, from one fresh thread (the sockets it creates
    are that namespace's, wherever their fds go afterwards); an OSError in place of the result of a path that
    could not be entered or whose ``fn`` failed."""

    def run() -> list[T | OSError]:
        out: list[T | OSError] = []
        for path in paths:
            try:
                setns_net(path)
                out.append(fn())
            except OSError as exc:
                out.append(exc)
        return out

    return await in_fresh_thread(run, name=name)


def netlink_fd() -> int:
    """A NETLINK_ROUTE datagram socket in the calling thread's netns, returned as a bare fd."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    return sock.detach()


def netlink_fd_in(path: str) -> int:
    """Blocking; call only via :func:`in_fresh_thread`."""
    setns_net(path)
    return netlink_fd()


class NotANamespace(OSError):
    """``path`` exists but is not a live network namespace; ``what`` says what it is ("is a FIFO")."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(errno.EINVAL, f"{path} {what}, not a network namespace", path)
        self.what = what


_KINDS = (
    (stat.S_ISFIFO, "is a FIFO"),
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISSOCK, "is a socket"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
    (stat.S_ISLNK, "is a symbolic link"),
)
_NS_KINDS = {
    0x00020000: "a mount",
    0x20000000: "a PID",
    0x04000000: "a UTS",
    0x08000000: "an IPC",
    0x10000000: "a user",
    0x02000000: "a cgroup",
    0x00000080: "a time",
}


def _nsfs_dev() -> int:
    """st_dev of nsfs (one internal mount: every namespace file, bind-mounted or not, has it)."""
    return os.stat("/proc/thread-self/ns/net").st_dev


def open_netns(path: str) -> int:
    """An O_RDONLY fd of the network namespace at ``path``, never blocking: the path is opened with O_PATH
    first (which does not open a FIFO or a device), checked to be an nsfs file of a network namespace, and only
    then reopened through /proc/self/fd.  Raises NotANamespace (what it is instead) or OSError (ENOENT...)."""
    pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(pfd)
        for test, what in _KINDS:
            if test(st.st_mode):
                raise NotANamespace(path, what)
        if st.st_dev != _nsfs_dev():
            raise NotANamespace(path, "is a regular file")
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    finally:
        os.close(pfd)
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        os.close(fd)
        raise NotANamespace(path, "is an nsfs file but no namespace") from None
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise NotANamespace(path, f"is {_NS_KINDS.get(kind, 'another kind of')} namespace")
    return fd


def probe(path: str) -> NsProbe:
    """Never blocks (see open_netns).  Compares with the calling thread's namespace: call from the event
    loop's thread (netd's namespace), not from a thread that setns()ed."""
    try:
        fd = open_netns(path)
    except NotANamespace as exc:
        return NsProbe(None, exc.what)
    except OSError as exc:
        why = "does not exist" if exc.errno == errno.ENOENT else f"cannot be opened ({exc.strerror})"
        return NsProbe(None, why)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    ident = (st.st_dev, st.st_ino)
    own = ""
    for who, ns in (("netd", OWN_NS), ("init", INIT_NS)):
        with contextlib.suppress(OSError):
            mine = os.stat(ns)
            if (mine.st_dev, mine.st_ino) == ident:
                own = who
                break
    return NsProbe(ident, own=own)


def ns_alive(path: str) -> bool:
    """True if ``path`` is an nsfs file of a live *network* namespace (never blocks on a FIFO or device)."""
    try:
        os.close(open_netns(path))
    except OSError:
        return False  # missing, a plain file (e.g. left behind after a reboot), a FIFO...
    return True


def ns_inode(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def is_mountpoint(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/thread-self/mountinfo", encoding="utf-8") as f:  # this thread may be in another mount ns
        for line in f:
            mnt = line.split(" ", 5)[4].replace("\\040", " ")
            if mnt == real:
                return True
    return False


def prepare_netns_dir(netns_dir: str) -> None:
    """mkdir + make the directory a shared mount (bind onto itself first if it is not a mount point).

    Same as iproute2: bind mounts of netns files made later then propagate to other mount namespaces.
    """
    os.makedirs(netns_dir, mode=0o755, exist_ok=True)
    if not is_mountpoint(netns_dir):
        mount(netns_dir, netns_dir, None, MS_BIND | MS_REC)
    mount(None, netns_dir, None, MS_SHARED | MS_REC)


def create_named_netns(
    netns_dir: str, name: str, prepare: bool = True, host_mnt: str = "", share: bool = False
) -> bool:
    """Blocking, runs in a fresh thread: create netns_dir/name bound to a new netns, its loopback up.

    Returns whether it was created.  The calling thread ends up inside the new namespace, which is why this
    must only run in a throw-away thread (it brings lo up from there: no socket for the event loop to set up,
    two pyroute2 round trips less per namespace in a replay).  With ``host_mnt`` (a mount
    namespace file other than ours) the bind mount is made there, so it is visible host-wide (see mountns).
    ``share``: no new namespace; the name is bound to netd's own (Docker's ``--network host``).
    """
    path = os.path.join(netns_dir, name)
    if ns_alive(path):
        return False
    with HostMount(host_mnt) as hm:
        _create_named_netns(netns_dir, path, prepare, share)
        hm.back()
        if hm.host is not None and not ns_alive(path):  # no propagation back to us: mount here too
            mount(thread_ns_path(), path, None, MS_BIND)
    if not share:
        _lo_up()
    return True


def _lo_up() -> None:
    """The calling thread's namespace's loopback up (ifindex 1 in every network namespace)."""
    with rtwrite.route_socket() as sock:
        (err,) = rtwrite.transact(sock, [rtwrite.set_up(LOOPBACK_INDEX)])
    if err is not None:
        raise OSError(err.errno, f"bring lo up: {err.strerror}")


def _create_named_netns(netns_dir: str, path: str, prepare: bool, share: bool) -> None:
    if prepare:
        prepare_netns_dir(netns_dir)
    if os.path.lexists(path):  # a stale plain file (or a dead mount): replace it
        try:
            umount_detach(path)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):
                raise
        os.unlink(path)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    try:
        if not share:
            unshare_net()
        mount(thread_ns_path(), path, None, MS_BIND)
    except BaseException:
        os.unlink(path)
        raise


def remove_named_netns(path: str, host_mnt: str = "") -> bool:
    """Unmount + unlink; returns False if there was nothing to remove.  Blocking; with ``host_mnt`` only in a
    fresh thread."""
    if not os.path.lexists(path):
        return False
    with HostMount(host_mnt) as hm:
        if hm.host is not None:
            _remove_named_netns(path)  # in the host's mount namespace; then ours (a mount of our own, if any)
        hm.back()
    return _remove_named_netns(path)


def _remove_named_netns(path: str) -> bool:
    if not os.path.lexists(path):
        return True
    try:
        umount_detach(path)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (stale file)
            raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True
