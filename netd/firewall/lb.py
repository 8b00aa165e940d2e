"""Applies services' load-balancing rules (``LbRuleset``) to the kernel: the API the reconciler calls.

    backend = make_lb_backend("nftables")           # or "iptables"; netns=PATH to work in another namespace
    change = await backend.apply(build_lb(services, node))   # atomic; a delta when the kernel holds the last one
    await backend.in_sync(desired)                   # cheap: one small read-back, not a table listing
    await backend.remove_all()

``apply`` sends a delta when this backend applied the previous ruleset itself (the delta's size follows the
change: a task joining a service is an endpoint chain, the spread chains that list it and nothing else) and
falls back to a full atomic replacement when the kernel no longer holds it (flushed, edited, daemon restart).
After a change that drops backends it deletes their DNAT'd conntrack entries, so from then on no packet of a
new or a UDP flow goes to them.  Every successful apply writes a fresh token into the table's state chain;
``in_sync`` is "the desired ruleset is the one applied, and the kernel still shows its token" (a flush, a
deleted table or a restart of another tool's ruleset loses it).

All kernel work runs on one worker thread, which first enters ``netns`` when given (libnftables contexts,
netlink sockets and ``iptables-restore`` children all bind to the namespace of the thread that makes them).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import structlog

from netd.core.errors import FirewallError
from netd.firewall import lb_iptables, lb_nft
from netd.firewall.iptables import Flavour, binary, detect_flavour
from netd.firewall.lb_conntrack import BackendTarget, flush_backends
from netd.firewall.lb_model import LbRuleset, Slots, assign_slots
from netd.firewall.libnft import NftContext, open_context

log = structlog.get_logger()
T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_HINT = (
    'check that nf_tables/iptables work here (`nft list tables` as root), or set the firewall backend to "none"'
)


@dataclass(frozen=True)
class LbChange:
    mode: Literal["none", "delta", "full"]
    commands: int  # nft commands or restore lines sent
    flushed: int  # conntrack entries deleted


class LbBackend(Protocol):
    name: str

    async def apply(self, desired: LbRuleset) -> LbChange: ...

    async def in_sync(self, desired: LbRuleset) -> bool: ...

    async def remove_all(self) -> None: ...

    def close(self) -> None: ...


def make_lb_backend(kind: str, netns: str | None = None) -> LbBackend:
    if kind == "nftables":
        return NftLbBackend(netns)
    if kind == "iptables":
        return IptablesLbBackend(netns)
    raise FirewallError(f"load balancing: unknown firewall backend {kind!r}; use nftables or iptables")


def _enter_netns(path: str | None) -> None:
    if path is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def removed_targets(old: LbRuleset | None, new: LbRuleset) -> list[BackendTarget]:
    """Backends (address, proto, port) that ``old`` could choose and ``new`` cannot."""
    if old is None:
        return []
    gone = old.endpoints() - new.endpoints()
    return [BackendTarget(e.address, e.proto, e.port) for e in sorted(gone)]


class _Worker:
    name = "?"

    def __init__(self, netns: str | None) -> None:
        self._netns = netns
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="netd-lb", initializer=_enter_netns, initargs=(netns,)
        )
        self._applied: LbRuleset | None = None
        self._slots: Slots = {}  # the slot layout of the applied spreads (nftables; iptables keeps none)
        self._token = ""
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def apply(self, desired: LbRuleset) -> LbChange:
        return await self._run(self._apply_sync, desired)

    async def in_sync(self, desired: LbRuleset) -> bool:
        if self._applied is None or self._applied != desired:
            return False
        return await self._run(self._kernel_token) == (self._token if not desired.empty else None)

    async def remove_all(self) -> None:
        await self._run(self._remove_sync)
        self._applied, self._slots = None, {}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._executor.submit(self._drop).result()
            self._executor.shutdown(wait=True)

    def _drop(self) -> None:
        return None

    def _apply_sync(self, desired: LbRuleset) -> LbChange:
        previous, self._applied = self._applied, None
        token = secrets.token_hex(6)
        mode: Literal["none", "delta", "full"] = "full"
        # the kernel still holds what we applied last (one small read): only then is a delta correct
        holds = previous is not None and self._kernel_token() == (None if previous.empty else self._token)
        if holds and previous == desired:
            self._applied = desired
            return LbChange("none", 0, 0)
        sent = 0
        slots = assign_slots(self._slots, desired)  # a full repair keeps the layout too
        if holds and previous is not None and not previous.empty and not desired.empty:
            try:
                sent = self._delta(previous, self._slots, desired, slots, token)
                mode = "delta"
            except FirewallError as e:  # the kernel does not hold `previous`: replace it all
                log.info("lb_delta_failed", backend=self.name, error=str(e))
        if mode == "full":
            sent = self._full(desired, slots, token)
        self._applied, self._slots, self._token = desired, slots, token
        gone = removed_targets(previous, desired)
        flushed = asyncio.run(flush_backends(gone)) if gone else 0
        return LbChange(mode, sent, flushed)

    def _delta(self, old: LbRuleset, old_slots: Slots, new: LbRuleset, new_slots: Slots, token: str) -> int:
        raise NotImplementedError

    def _full(self, desired: LbRuleset, slots: Slots, token: str) -> int:
        raise NotImplementedError

    def _kernel_token(self) -> str | None:
        raise NotImplementedError

    def _remove_sync(self) -> None:
        raise NotImplementedError


class NftLbBackend(_Worker):
    """``table ip netd-lb`` through libnftables JSON (see lb_nft.py)."""

    name = "nftables"

    def __init__(self, netns: str | None = None) -> None:
        super().__init__(netns)
        self._nft: NftContext | None = None

    def _drop(self) -> None:
        self._nft = None  # frees the context and its netlink socket (which pins the namespace)

    def _ctx(self) -> NftContext:
        if self._nft is None:
            self._nft = open_context("load balancing")
        return self._nft

    def _cmd(self, batch: str, what: str) -> None:
        rc, _out, err = self._ctx().cmd(batch)
        if rc != 0:
            raise FirewallError(f"nftables: {what} failed: {err.strip() or f'rc={rc}'}; {_HINT}")

    def _delta(self, old: LbRuleset, old_slots: Slots, new: LbRuleset, new_slots: Slots, token: str) -> int:
        batch = lb_nft.render_delta(old, old_slots, new, new_slots, token)
        self._cmd(batch, "updating the load-balancing rules")
        return batch.count("\n")

    def _full(self, desired: LbRuleset, slots: Slots, token: str) -> int:
        if desired.empty and self._kernel_token() is None and not self._table_exists():
            return 0
        batch = lb_nft.render_full(desired, slots, token)
        self._cmd(batch, "replacing the load-balancing rules")
        return batch.count("\n")

    def _table_exists(self) -> bool:
        rc, out, _err = self._ctx().json_cmd({"nftables": [{"list": {"tables": None}}]})  # names only: cheap
        tables = [
            o.get("table") or {} for o in (out.get("nftables", []) if rc == 0 and isinstance(out, dict) else [])
        ]
        return any(t.get("family") == lb_nft.FAMILY and t.get("name") == lb_nft.TABLE for t in tables)

    def _kernel_token(self) -> str | None:
        rc, out, _err = self._ctx().json_cmd(lb_nft.list_state_cmd())
        return lb_nft.token_of(out) if rc == 0 else None

    def _remove_sync(self) -> None:
        if self._table_exists():
            self._cmd(lb_nft.delete_table_cmd(), "removing the load-balancing table")


class IptablesLbBackend(_Worker):
    """``NETDLB-*`` chains in the nat table through ``iptables-restore --noflush`` (see lb_iptables.py)."""

    name = "iptables"

    def __init__(self, netns: str | None = None, flavour: Flavour | None = None) -> None:
        found = flavour or detect_flavour()
        if found is None:
            raise FirewallError("load balancing: no iptables found; install iptables or use the nftables backend")
        super().__init__(netns)
        self.flavour: Flavour = found

    async def apply(self, desired: LbRuleset) -> LbChange:
        lb_iptables.check_supported(desired)  # refused before anything changes
        return await super().apply(desired)

    def holds_rules(self) -> bool:
        """This namespace's nat table has NETDLB chains or jumps (uninstall asks before removing)."""
        return bool(lb_iptables.render_removal(self._exec("save", None)))

    def _exec(self, verb: Literal["save", "restore"], text: str | None) -> str:
        argv = [binary(self.flavour, "ipv4", verb)]
        argv += ["-t", "nat"] if verb == "save" else ["--noflush", "--wait=10"]
        try:
            done = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FirewallError(f"iptables: {argv[0]} failed ({exc}); {_HINT}") from exc
        if done.returncode != 0:
            raise FirewallError(f"iptables: {argv[0]} failed: {done.stderr.strip()}; {_HINT}")
        return done.stdout

    def _delta(self, old: LbRuleset, old_slots: Slots, new: LbRuleset, new_slots: Slots, token: str) -> int:
        text = lb_iptables.render_delta(old, new, token)
        self._exec("restore", text)
        return text.count("\n")

    def _full(self, desired: LbRuleset, slots: Slots, token: str) -> int:
        text = lb_iptables.render_full(desired, token, self._exec("save", None))
        if text:
            self._exec("restore", text)
        return text.count("\n")

    def _kernel_token(self) -> str | None:
        return lb_iptables.token_of(self._exec("save", None))

    def _remove_sync(self) -> None:
        text = lb_iptables.render_removal(self._exec("save", None))
        if text:
            self._exec("restore", text)
