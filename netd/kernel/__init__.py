"""The kernel layer.  Importing it first makes ``import pyroute2`` lean (issue 14, idle RSS).

pyroute2's package ``__init__`` imports every API it has (NDB with sqlite, IPDB, nl80211, IPVS, wireguard, plan9,
ethtool...): 6 MiB of a daemon that uses only rtnetlink and conntrack sockets (``bench/memory.py``).  So before any
``pyroute2.<submodule>`` import here, the package is registered without running its ``__init__``; submodules
import as usual, and the first access to a top-level name (``from pyroute2 import NDB``, by a test or a tool in
the same process) runs the real ``__init__`` then, so nothing outside netd sees a difference.
"""

from __future__ import annotations

from netd.core.lean import lean

lean("pyroute2")
