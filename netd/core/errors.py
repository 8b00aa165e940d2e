"""One error tree for netd.

Every error a user can see carries a stable ``code`` (used by the API, the CLI and the logs) and a message
that says what was wrong and what to do next.  ``api.py`` maps the codes to HTTP status codes in one place.
"""

from __future__ import annotations


class NetdError(Exception):
    """Base of every error netd raises on purpose."""

    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidError(NetdError):
    """The caller's request (API, CLI, config, state file) is not valid."""

    code = "invalid"


class NotFoundError(NetdError):
    code = "not_found"


class ConflictError(NetdError):
    """The request clashes with existing state (a name, a subnet, an address, a port in use)."""

    code = "conflict"


class KernelError(NetdError):
    """A netlink or sysctl operation failed."""

    code = "kernel"


class FirewallError(NetdError):
    """The firewall backend refused a transaction."""

    code = "firewall"


class StateError(NetdError):
    """The state file is corrupt or of a newer schema; netd refuses to overwrite it."""

    code = "state"


class StorageError(NetdError):
    """The state directory could not be written (full, over quota, read-only or failing): the change that
    needed it was not made, in memory, on disk or in the kernel.  ``no_space``: full or over quota (HTTP 507)."""

    code = "storage"

    def __init__(self, message: str, *, errno: int | None = None, no_space: bool = False) -> None:
        super().__init__(message)
        self.errno = errno
        self.no_space = no_space
