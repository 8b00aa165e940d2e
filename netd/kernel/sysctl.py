"""sysctls via /proc/sys, in the daemon's netns or (from a fresh thread that setns()es) in another one."""

from __future__ import annotations

import os

from netd.core.errors import KernelError
from netd.core.linkspec import NsRef
from netd.kernel.netns import in_fresh_thread, setns_net
from netd.kernel.nlerror import kernel_error

PROC_SYS = "/proc/sys"


def sysctl_path(key: str) -> str:
    """``net.ipv4.ip_forward`` -> ``/proc/sys/net/ipv4/ip_forward``.

    A key may also be given with slashes (``net/ipv6/conf/eth0.5/disable_ipv6``) when a part contains a dot.
    """
    rel = key if "/" in key else key.replace(".", "/")
    parts = rel.strip("/").split("/")
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise KernelError(f'sysctl "{key}": not a valid key; use dotted form like net.ipv4.ip_forward')
    return os.path.join(PROC_SYS, *parts)


def write_sysctl(key: str, value: str) -> None:
    with open(sysctl_path(key), "w", encoding="ascii") as f:
        f.write(value)


def read_sysctl(key: str) -> str:
    with open(sysctl_path(key), encoding="ascii") as f:
        return f.read().strip()


def _where(ns: NsRef | None) -> str:
    return f" in netns {ns.path}" if ns else ""


async def set_sysctl(key: str, value: str, ns: NsRef | None = None) -> None:
    try:
        if ns is None:
            write_sysctl(key, value)
            return

        def run() -> None:
            setns_net(ns.path)
            write_sysctl(key, value)

        await in_fresh_thread(run, name="netd-sysctl")
    except OSError as exc:
        raise kernel_error(f'sysctl "{key}"{_where(ns)}', f"set to {value!r}", exc) from exc


async def get_sysctl(key: str, ns: NsRef | None = None) -> str:
    try:
        if ns is None:
            return read_sysctl(key)

        def run() -> str:
            setns_net(ns.path)
            return read_sysctl(key)

        return await in_fresh_thread(run, name="netd-sysctl")
    except OSError as exc:
        raise kernel_error(f'sysctl "{key}"{_where(ns)}', "read", exc) from exc
