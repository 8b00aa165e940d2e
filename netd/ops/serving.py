"""Imported first by the daemon (``netd.daemon``): aiohttp without its HTTP client half, which a daemon that only
serves never uses (3.8 MiB of idle RSS), and prometheus_client without the exposition servers and collectors its
``__init__`` imports (0.6 MiB; netd.ops.metrics imports the submodules it uses); see ``netd.core.lean``.  Not
imported by the CLI or the CNI plugin."""

from __future__ import annotations

from netd.core.lean import lean

LEAN = ("aiohttp", "prometheus_client", "pyroute2")  # pyroute2: netd.kernel
for _name in LEAN[:2]:
    lean(_name)
