"""Loading libnftables: the one place that turns a missing module or library into an error that says what to do.

Both nftables users (the firewall backend, ``nftables.py``, and the services' load balancer, ``lb.py``) hold one
context each in their own worker thread: a context owns a netlink socket bound to the namespace it was made in.
"""

from __future__ import annotations

from typing import Any, Protocol

from netd.core.errors import FirewallError


class NftContext(Protocol):
    def json_cmd(self, json_root: Any) -> tuple[int, Any, str]: ...

    def cmd(self, cmdline: str) -> tuple[int, Any, str]: ...

    def set_json_output(self, val: bool) -> bool: ...


def open_context(who: str) -> NftContext:
    """A libnftables context with JSON output; ``who`` starts the error messages ("nftables backend", …)."""
    try:
        import nftables  # pip-nftables; loads libnftables.so.1 through ctypes
    except ImportError as exc:  # pragma: no cover - packaging problem
        raise FirewallError(f"{who}: python module nftables missing ({exc}); install pip-nftables") from exc
    try:
        ctx: NftContext = nftables.Nftables()
    except OSError as exc:
        raise FirewallError(
            f"{who}: cannot load libnftables ({exc}); install the Debian package libnftables1 "
            'or set the firewall backend to "none"'
        ) from exc
    ctx.set_json_output(True)
    return ctx
