"""The kernel layer.  Importing it first makes ``import pyroute2`` lean (issue 14, idle RSS).

pyroute2's package ``__init__`` imports every API it has (NDB with sqlite, IPDB, nl80211, IPVS, wireguard, plan9,
ethtool...): 6 MiB of a daemon that uses only rtnetlink and conntrack sockets (``bench/memory.py``).  So before any
``pyroute2.<submodule>`` import here, the package is registered without running its ``__init__``; submodules
import as usual, and the first access to a top-level name (``from pyroute2 import NDB``, by a test or a tool in
the same process) runs the real ``__init__`` then, so nothing outside netd sees a difference.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any


def _lean_pyroute2() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.origin is None or spec.submodule_search_locations is None:
        return
    pkg = types.ModuleType("pyroute2")
    pkg.__file__ = spec.origin
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__package__ = "pyroute2"
    origin = spec.origin

    def full(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:  # ``from pyroute2 import config``
            return importlib.import_module(f"pyroute2.{name}")
        del pkg.__dict__["__getattr__"]  # once: the real __init__ defines the rest
        with open(origin, encoding="utf-8") as f:
            exec(compile(f.read(), origin, "exec"), pkg.__dict__)  # pyroute2's own __init__
        return getattr(pkg, name)

    pkg.__dict__["__getattr__"] = full
    sys.modules["pyroute2"] = pkg


_lean_pyroute2()
