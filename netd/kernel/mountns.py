"""Bind-mount named netns from the host's mount namespace.

systemd's ProtectSystem=/PrivateTmp=/ProtectHome= run netd in a private mount namespace whose root is a *slave*
of the host's: mounts made by the host show up inside, mounts made inside never reach the host.  A named netns
netd bind-mounts there would be invisible to ``ip netns list`` on the host.  So the throw-away thread that
creates a named netns first detaches its fs attributes (``unshare(CLONE_FS)``: setns() into a mount namespace
refuses threads sharing them) and enters the host's mount namespace; the mount then propagates from the host
into netd's namespace like any host mount.  Needs CAP_SYS_ADMIN and CAP_SYS_CHROOT (setns), and to open
``/proc/1/ns/mnt`` CAP_SYS_PTRACE (PID 1 holds capabilities netd lacks).

Only ever call :func:`enter` from a thread that dies afterwards (``netns.in_fresh_thread``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

CLONE_FS = 0x200
CLONE_NEWNS = 0x20000
SELF = "/proc/thread-self/ns/mnt"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def open_other(path: str) -> int | None:
    """An fd of the mount namespace at ``path`` when it is not the caller's own; None when it is, or when
    ``path`` is empty or cannot be opened (then netd mounts in its own namespace, as without systemd)."""
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_ino == os.stat(SELF).st_ino:
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return fd


def usable(path: str) -> tuple[bool, str]:
    """Whether netd will mount from ``path`` (for status/doctor): (other namespace opened, explanation)."""
    if not path:
        return False, "host_mount_namespace is empty: netns are mounted in netd's own mount namespace"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"cannot open {path} ({exc.strerror}): netns are mounted in netd's own mount namespace"
    try:
        same = os.fstat(fd).st_ino == os.stat(SELF).st_ino
    finally:
        os.close(fd)
    if same:
        return False, f"{path} is netd's own mount namespace"
    return True, f"netns are mounted from the mount namespace {path}"


def enter(fd: int) -> None:
    """Move the calling thread (only) into the mount namespace ``fd``."""
    _check(_libc.unshare(CLONE_FS), "unshare(CLONE_FS)")
    _check(_libc.setns(fd, CLONE_NEWNS), "setns(mount namespace)")


class HostMount:
    """Context for one throw-away thread: inside, the thread is in the host's mount namespace (when there is a
    different one); ``back()`` returns it to netd's own."""

    def __init__(self, host_path: str) -> None:
        self.host = open_other(host_path)
        self.own: int | None = None
        self.inside = False

    def __enter__(self) -> HostMount:
        if self.host is not None:
            self.own = os.open(SELF, os.O_RDONLY | os.O_CLOEXEC)
            enter(self.host)
            self.inside = True
        return self

    def back(self) -> None:
        if self.inside and self.own is not None:
            _check(_libc.setns(self.own, CLONE_NEWNS), "setns(own mount namespace)")
            self.inside = False

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.back()
        for fd in (self.host, self.own):
            if fd is not None:
                os.close(fd)
