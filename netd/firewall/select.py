"""Choose a firewall backend by name."""

from __future__ import annotations

from netd.errors import InvalidError
from netd.firewall.base import FirewallBackend
from netd.firewall.rules import Ruleset

KINDS = ("auto", "nftables", "none")


class NoneBackend:
    """Writes nothing: for hosts whose firewall is managed by something else."""

    name = "none"

    async def apply(self, ruleset: Ruleset) -> None:
        return None

    async def in_sync(self, ruleset: Ruleset) -> bool:
        return True

    async def remove_all(self) -> None:
        return None

    def describe(self) -> dict[str, str]:
        return {"backend": self.name}


def make_backend(kind: str) -> FirewallBackend:
    """The backend for ``kind`` ("auto", "nftables" or "none")."""
    return choose_backend(kind)[0]


def choose_backend(kind: str) -> tuple[FirewallBackend, str]:
    """The backend for ``kind`` and why it was chosen (for ``netd-ctl status``)."""
    if kind == "none":
        return NoneBackend(), "configured: none"
    if kind == "nftables":
        from netd.firewall.nftables import NftablesBackend

        return NftablesBackend(), "configured: nftables"
    if kind == "auto":
        chosen, why = _auto_kind()
        return choose_backend(chosen)[0], f"auto: {why}"
    raise InvalidError(
        f"firewall backend {kind!r} is unknown; use one of: {', '.join(KINDS)}", field="firewall_backend"
    )


def _auto_kind() -> tuple[str, str]:
    """The backend "auto" picks.

    Hook for the iptables backend (later issue): probe here, e.g. prefer ``iptables`` when the host's firewall
    (docker's FORWARD policy DROP, ufw, firewalld) lives in iptables chains, since a DROP there wins over any
    accept in netd's own nftables table.  Until that backend exists, "auto" is nftables.
    """
    return "nftables", "nftables (the only firewall backend so far)"
