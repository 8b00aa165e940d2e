"""Native nftables backend over libnftables JSON (PyPI ``pip-nftables``, Debian ``libnftables1``).

netd owns ``table inet netd`` and ``table bridge netd`` and touches nothing else.  Tables are not created
with the ``owner`` flag: the rules must outlive the daemon process (restart is not a disruption).

libnftables is synchronous and its context is bound to the network namespace it was created in.  All calls
run on one dedicated single-thread executor, so they never overlap, and the context is created lazily *in
that thread*.  The worker thread is spawned by the first call and inherits the network namespace of the thread
that made it, i.e. the daemon's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from netd.core.errors import FirewallError
from netd.core.ruleset import Ruleset
from netd.firewall.libnft import NftContext, open_context
from netd.firewall.nft_render import (
    FAMILIES,
    TABLE_NAME,
    Family,
    Json,
    TableSummary,
    delete_table_cmd,
    expected_summaries,
    observed_summaries,
    render_nft_delta,
    render_nft_json,
)

T = TypeVar("T")

_HINT = (
    "check that nf_tables is available (`nft list tables` as root) and that no other tool holds netd's tables; "
    'or set the firewall backend to "none"'
)


class NftablesBackend:
    name = "nftables"

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netd-nft")
        self._nft: NftContext | None = None
        self._netns: str = "unknown"
        self._last_hash: str = ""
        self._closed = False
        # The last ruleset rendered, with its batch and expected summaries: in_sync on a timer for an unchanged
        # desired state then skips rendering (about a third of its cost at 1000 networks).
        self._cache: tuple[Ruleset, Json, dict[str, TableSummary]] | None = None
        self._applied: Ruleset | None = None  # what the last successful apply put in the kernel

    # -------------------------------------------------------------------- protocol

    async def apply(self, ruleset: Ruleset) -> None:
        await self._run(self._apply_sync, ruleset)

    async def in_sync(self, ruleset: Ruleset) -> bool:
        return await self._run(self._in_sync_sync, ruleset)

    async def remove_all(self) -> None:
        await self._run(self._remove_all_sync)

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "tables": ", ".join(f"{fam} {TABLE_NAME}" for fam in FAMILIES),
            "netns": self._netns,
            "last_applied": self._last_hash or "-",
        }

    def close(self) -> None:
        """Free the libnftables context (in its own thread) and stop the worker; the kernel keeps the rules."""

        def drop_ctx() -> None:
            self._nft = None  # nft_ctx_free closes its netlink socket, which pins the netns

        if self._closed:
            return
        self._closed = True
        self._executor.submit(drop_ctx).result()
        self._executor.shutdown(wait=True)

    # -------------------------------------------------------------------- worker-thread side

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _ctx(self) -> NftContext:
        if self._nft is None:
            self._nft = open_context("nftables backend")
            try:
                self._netns = os.readlink("/proc/thread-self/ns/net")
            except OSError:
                self._netns = "unknown"
        return self._nft

    def _cmd(self, batch: Json, what: str) -> Any:
        rc, out, err = self._ctx().json_cmd(batch)
        if rc != 0:
            raise FirewallError(f"nftables: {what} failed: {err.strip() or f'rc={rc}'}; {_HINT}")
        return out

    def _existing(self) -> set[Family]:
        out = self._cmd({"nftables": [{"list": {"tables": None}}]}, "listing tables")
        found: set[Family] = set()
        for obj in out.get("nftables", []) if isinstance(out, dict) else []:
            t = obj.get("table")
            if t and t.get("name") == TABLE_NAME and t.get("family") in FAMILIES:
                found.add(t["family"])
        return found

    def _render(self, ruleset: Ruleset) -> tuple[Json, dict[str, TableSummary]]:
        if self._cache is None or not (self._cache[0] is ruleset or self._cache[0] == ruleset):
            batch = render_nft_json(ruleset)
            self._cache = (ruleset, batch, expected_summaries(batch))
        return self._cache[1], self._cache[2]

    def _apply_sync(self, ruleset: Ruleset) -> None:
        batch, summaries = self._render(ruleset)
        previous, self._applied = self._applied, None
        delta = render_nft_delta(previous, ruleset, batch) if previous is not None else None
        if delta is not None:  # only elements changed (a published port): O(changes), not a table rewrite
            try:
                self._cmd(delta, "updating netd's maps")
                self._applied = ruleset
                self._last_hash = next((s.marker or "" for s in summaries.values()), "")
                return
            except FirewallError:  # the kernel does not hold `previous` (flushed, edited): replace it all
                pass
        stale = [delete_table_cmd(fam) for fam in sorted(self._existing() - set(summaries))]
        cmds = stale + batch["nftables"]
        if cmds:
            self._cmd({"nftables": cmds}, "applying netd's ruleset")
        self._applied = ruleset
        self._last_hash = next((s.marker or "" for s in summaries.values()), "")

    def _observe(self) -> Json:
        objs: list[Json] = []
        for fam in sorted(self._existing()):
            rc, out, _err = self._ctx().json_cmd(
                {"nftables": [{"list": {"table": {"family": fam, "name": TABLE_NAME}}}]}
            )
            if rc != 0:  # vanished between the two calls: treat as absent
                continue
            objs.extend(out.get("nftables", []))
        return {"nftables": objs}

    def _in_sync_sync(self, ruleset: Ruleset) -> bool:
        return observed_summaries(self._observe()) == self._render(ruleset)[1]

    def _remove_all_sync(self) -> None:
        cmds = [delete_table_cmd(fam) for fam in sorted(self._existing())]
        if cmds:
            self._cmd({"nftables": cmds}, "removing netd's tables")
        self._applied = None
        self._last_hash = ""
