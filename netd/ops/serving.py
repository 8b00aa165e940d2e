"""Imported first by the daemon (``netd.daemon``): aiohttp without its HTTP client half, which a daemon that only
serves never uses (3.8 MiB of idle RSS; see ``netd.core.lean``).  Not imported by the CLI or the CNI plugin."""

from __future__ import annotations

from netd.core.lean import lean

lean("aiohttp")
LEAN = ("aiohttp", "pyroute2")  # pyroute2: netd.kernel
