"""glibc malloc settings for a long-running daemon.

asyncio reads every socket into a fresh 256 KiB buffer and shrinks it to what arrived.  glibc serves the first
buffers with mmap and, when one is freed, raises its mmap threshold above that size (the "dynamic threshold"),
so later ones come from the brk heap, which fragments and never shrinks: the heap grew by 7.6 MiB over 1000
connects with the default, by 0.1 MiB with a fixed threshold (bench/memory.py).  The fixed threshold keeps those
buffers on mmap, handed back to the kernel when freed; :func:`trim` returns the heap's free pages after a full
reconcile.  Both do nothing on a libc without them (musl).

The threshold is 256 KiB, just under asyncio's buffer (256 KiB + the bytes object's header), not glibc's
initial 128 KiB: libnftables allocates a 128 KiB batch buffer per command, and on mmap every command paid an
mmap, a munmap and the page faults (0.11 -> 0.21-0.35 ms per port change in a bare process, 0.8-1.0 ms in netd).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

log = structlog.get_logger()

M_MMAP_THRESHOLD = -3  # mallopt(3) parameter number (glibc malloc.h)
MMAP_THRESHOLD = 256 * 1024  # asyncio's read buffers (256 KiB + a header) above it, libnftables' (128 KiB) below


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def tune() -> bool:
    """Fix the mmap threshold (call once at start).  True if the libc took it."""
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("malloc_tuned", mmap_threshold=MMAP_THRESHOLD, ok=ok)
    return ok


def trim() -> None:
    """Give the heap's free pages back to the kernel (a few ms; after a full reconcile)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
