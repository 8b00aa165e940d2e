"""Turn netlink/OS errors into :class:`netd.core.errors.KernelError` with a message that says what to do."""

from __future__ import annotations

import errno
import os

from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError

_HINTS: dict[int, str] = {
    errno.EEXIST: "another interface already has this name; pick another name or remove the other interface",
    errno.ENODEV: "the interface does not exist (any more); a reconcile will recreate it",
    errno.EOPNOTSUPP: "this kernel lacks the feature or module (check `modprobe` and the kernel config)",
    errno.EPERM: "netd needs CAP_NET_ADMIN (run it as root or grant the capability)",
    errno.EACCES: "netd needs CAP_NET_ADMIN/CAP_SYS_ADMIN (run it as root or grant the capability)",
    errno.EBUSY: "the device is in use (already enslaved or a macvlan/ipvlan parent)",
    errno.ENOENT: "the object does not exist; a reconcile will recreate it",
    errno.EINVAL: "the kernel rejected a value (check MTU 68-65535, name <= 15 bytes, address and prefix)",
    errno.ENETUNREACH: "the gateway is not inside any subnet of the interface",
    errno.ENOTCONN: "the peer end of the veth is not ready yet",
}


class KernelOpError(KernelError):
    """A failed kernel operation; ``errno`` lets callers branch (e.g. EEXIST) without parsing the text."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


def errno_of(exc: BaseException) -> int:
    if isinstance(exc, KernelOpError):
        return exc.errno
    if isinstance(exc, NetlinkError):
        return int(exc.code)
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    return 0


def kernel_error(obj: str, action: str, exc: BaseException, hint: str | None = None) -> KernelOpError:
    """``bridge "br-x": create failed: File exists (17); another interface already has this name ...``"""
    code = errno_of(exc)
    reason = f"{os.strerror(code)} ({code})" if code else str(exc)
    text = f"{obj}: {action} failed: {reason}"
    hint = hint or _HINTS.get(code)
    if hint:
        text += f"; {hint}"
    return KernelOpError(text, code)


def is_errno(exc: BaseException, *codes: int) -> bool:
    return errno_of(exc) in codes
