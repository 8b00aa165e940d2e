"""Native nftables backend over libnftables JSON (PyPI ``pip-nftables``, Debian ``libnftables1``).

netd owns ``table inet netd`` and ``table bridge netd`` and touches nothing else.  Tables are not created
with the ``owner`` flag: the rules must outlive the daemon process (restart is not a disruption).

libnftables is synchronous and its context is bound to the network namespace it was created in.  All calls
run on one dedicated single-thread executor, so they never overlap, and the context is created lazily *in
that thread*.  The worker thread is spawned by the first call and inherits the network namespace of the thread
that made it, i.e. the daemon's.

The firewall check (every second) first reads the nf_tables generation id (``nftgen``): when it has not moved
since netd's own last write, or since a comparison that found the tables in sync, nothing can have changed and
nothing is listed.  Only after someone else's write (``nft``, firewalld, the load balancer's own table) is
netd's table listed and compared again.
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
    Digest,
    Family,
    Json,
    delete_table_cmd,
    render_nft_delta,
    render_nft_json,
    ruleset_digest,
    tables_of,
)
from netd.firewall.nft_sync import TableSummary, observed_summaries, summaries_of
from netd.firewall.nftgen import GenReader

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
        self._gen: GenReader | None = None  # opened in the worker thread, like the context
        self._netns: str = "unknown"
        self._last_hash: str = ""
        self._closed = False
        self._applied: Ruleset | None = None  # what the last successful apply put in the kernel
        self._digest: Digest | None = None  # its marker's digest
        # (ruleset, generation): the kernel held exactly this ruleset at that nf_tables generation
        self._synced: tuple[Ruleset, int] | None = None
        self._expected: tuple[Ruleset, dict[str, TableSummary]] | None = None  # in_sync's last expectation

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
            if self._gen is not None:
                self._gen.close()

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

    def _generation(self) -> int | None:
        if self._gen is None:
            self._gen = GenReader()
        return self._gen.read()

    def _write(self, batch: Json, what: str, since: int | None = None, delta: bool = False) -> int | None:
        """Run one batch (one nf_tables transaction); the generation it left when nobody else wrote meanwhile.
        A ``delta`` changes only what netd knew to be there: its result is known only when nothing was written
        since ``since`` either (a foreign edit before it would otherwise pass for netd's)."""
        before = self._generation()
        self._cmd(batch, what)
        after = self._generation()
        if before is None or after != (before + 1) & 0xFFFFFFFF or (delta and before != since):
            return None
        return after

    def _applied_now(self, ruleset: Ruleset, digest: Digest, gen: int | None) -> None:
        self._applied, self._digest, self._last_hash = ruleset, digest, digest.text
        self._synced = (ruleset, gen) if gen is not None else None

    def _apply_sync(self, ruleset: Ruleset) -> None:
        previous, digest, synced = self._applied, self._digest, self._synced
        self._applied = self._digest = self._synced = None
        delta = render_nft_delta(previous, ruleset, digest) if previous is not None and digest else None
        if delta is not None and previous is not None:  # only elements changed (a published port): O(changes)
            since = synced[1] if synced is not None and _same(synced[0], previous) else None
            try:
                gen = self._write(delta[0], "updating netd's maps", since, delta=True)
                self._applied_now(ruleset, delta[1], gen)
                return
            except FirewallError:  # the kernel does not hold `previous` (flushed, edited): replace it all
                pass
        digest = ruleset_digest(ruleset)
        batch = render_nft_json(ruleset, digest)
        wanted = {fam for fam, table in tables_of(ruleset).items() if not table.empty}
        stale = [delete_table_cmd(fam) for fam in sorted(self._existing() - wanted)]
        cmds = stale + batch["nftables"]
        gen = self._write({"nftables": cmds}, "applying netd's ruleset") if cmds else self._generation()
        self._applied_now(ruleset, digest, gen)

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
        gen = self._generation()
        synced = self._synced
        if gen is not None and synced is not None and synced[1] == gen and _same(synced[0], ruleset):
            return True  # nobody has written to nf_tables since netd knew its tables in sync
        ok = observed_summaries(self._observe()) == self._expect(ruleset)
        self._synced = (ruleset, gen) if ok and gen is not None else None  # gen read before the listing
        return ok

    def _expect(self, ruleset: Ruleset) -> dict[str, TableSummary]:
        if self._expected is None or not _same(self._expected[0], ruleset):
            digest = self._digest if self._applied is not None and _same(self._applied, ruleset) else None
            self._expected = (ruleset, summaries_of(ruleset, digest or ruleset_digest(ruleset)))
        return self._expected[1]

    def _remove_all_sync(self) -> None:
        cmds = [delete_table_cmd(fam) for fam in sorted(self._existing())]
        if cmds:
            self._cmd({"nftables": cmds}, "removing netd's tables")
        self._applied = self._digest = self._synced = None
        self._last_hash = ""


def _same(a: Ruleset, b: Ruleset) -> bool:
    return a is b or a == b
