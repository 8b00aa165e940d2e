"""The role every firewall backend plays for the reconciler."""

from __future__ import annotations

from typing import Protocol

from netd.core.ruleset import Ruleset


class FirewallBackend(Protocol):
    """Owns netd's part of the packet filter and nothing else.

    ``apply`` replaces everything netd owns with ``ruleset`` in one atomic transaction (an empty ruleset removes
    it all); it is idempotent.  ``in_sync`` is a cheap check that the kernel still holds exactly what netd last
    applied for ``ruleset`` (it turns False after ``nft flush ruleset``, a deleted table, a flushed chain or
    set).  ``remove_all`` deletes everything netd owns and nothing else; missing objects are not an error.
    """

    name: str

    async def apply(self, ruleset: Ruleset) -> None: ...

    async def in_sync(self, ruleset: Ruleset) -> bool: ...

    async def remove_all(self) -> None: ...

    def describe(self) -> dict[str, str]: ...
