"""dnspython, imported when first used (issue 14, idle RSS): ``dns.message`` & co. are 1.6 MiB that a daemon
without a user network (no resolver to run) never needs.  ``dns.message.from_wire(...)`` reads as before: the
first access to ``dns.<module>`` imports it.  Type checkers see the real modules (``TYPE_CHECKING`` imports in
the users)."""

from __future__ import annotations

import importlib
from types import ModuleType


class _LazyDns:
    def __getattr__(self, name: str) -> ModuleType:
        module = importlib.import_module(f"dns.{name}")
        setattr(self, name, module)  # later lookups are plain attribute reads
        return module


dns = _LazyDns()
