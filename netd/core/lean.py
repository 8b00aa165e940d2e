"""Importing a package's submodules without running its ``__init__`` (issue 14, idle RSS).

Some dependencies' package ``__init__`` imports far more than netd uses: pyroute2's every API it has (NDB with
sqlite, IPDB, nl80211, IPVS, wireguard...: 6 MiB), aiohttp's HTTP client half (connector, client requests,
cookie jar, digest auth: 3.8 MiB) although the daemon only serves.  ``lean(name)`` registers the package
without running its ``__init__``: submodules import as usual (``from aiohttp import web`` imports
``aiohttp.web``), and the first access to any other top-level name (``aiohttp.ClientSession``,
``from pyroute2 import NDB``, by a test or a tool in the same process) runs the real ``__init__`` then, so
nothing outside netd sees a difference.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from typing import Any

_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


def lean(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or spec.submodule_search_locations is None:
        return
    pkg = types.ModuleType(name)
    pkg.__file__ = spec.origin
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__package__ = name
    origin = spec.origin
    with open(origin, encoding="utf-8") as f:
        source = f.read()
    if found := _VERSION.search(source):  # submodules read it (aiohttp.http: ``from . import __version__``)
        pkg.__dict__["__version__"] = found.group(1)

    def full(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if importlib.util.find_spec(f"{name}.{attr}") is not None:  # ``from pyroute2 import config``
            return importlib.import_module(f"{name}.{attr}")
        del pkg.__dict__["__getattr__"]  # once: the real __init__ defines the rest
        exec(compile(source, origin, "exec"), pkg.__dict__)  # the package's own __init__
        return getattr(pkg, attr)

    pkg.__dict__["__getattr__"] = full
    sys.modules[name] = pkg
