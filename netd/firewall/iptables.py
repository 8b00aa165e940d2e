"""iptables backend: ``iptables-restore --noflush`` into netd's own ``NETD-*`` chains (see iptables_render.py).

It speaks the iptables the host uses (``iptables --version`` says ``nf_tables`` or ``legacy``), so the rules
show in ``iptables -S`` next to Docker's, ufw's and firewalld's, and its accepts go where a foreign DROP
policy cannot override them (the first rule of FORWARD, and Docker's ``DOCKER-USER``).

Every call runs the ``*-save``/``*-restore`` binaries with ``asyncio.create_subprocess_exec`` (no shell; the
input holds only validated names), from the calling thread, so the child inherits the daemon's network
namespace.  Calls are serialised by a lock; the restore input is one transaction per family, and ``apply`` is one
step for both: when one family's restore fails, the other's previous netd chains (from the ``*-save`` taken
before) are put back before the error is raised, so a failed request leaves no half of itself behind.

icc=False needs bridged traffic to cross FORWARD (br_netfilter): when some network has icc off, ``apply``
turns on ``net.bridge.bridge-nf-call-iptables`` / ``-ip6tables`` in the daemon's namespace (what Docker does),
loading ``br_netfilter`` with ``modprobe`` first when its sysctls are missing; it never turns them off again.

The firewall check (every second) runs ``*-save`` only when something may have changed: with iptables-nft the
nf_tables generation id (``nftgen``) moved since a comparison found netd's chains in sync; with legacy
iptables the tables' rule counts and sizes (``xtinfo``) changed, and at least every ``LEGACY_RECHECK`` seconds
anyway (a rule replaced by one of the same size changes neither).  A full apply forgets the last comparison:
the next check compares.

A published-port change is a delta (issue 14, ``iptables_delta.py``): when only the DNAT maps' elements changed
since netd's last write and the token has not moved since that write (or since a comparison found the chains
holding it), the restore input is the changed ``NETD-PUBLISHED`` rules and the marker swap, and nothing is
saved.  A delta keeps the check's shortcut armed when it was armed and nobody else wrote meanwhile.  A failed
delta puts the previous rules back and the full apply runs.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Literal

import structlog

from netd.core.errors import FirewallError
from netd.core.ruleset import Ruleset
from netd.firewall.iptables_delta import render_ipt_delta
from netd.firewall.iptables_render import (
    Rendered,
    Saved,
    in_sync,
    parse_save,
    render_chains,
    render_removal,
    render_restore,
    rendered_from_saved,
)
from netd.firewall.iptables_rule import IP_FAMILIES, IpFamily
from netd.firewall.nftgen import GenReader
from netd.firewall.xtinfo import table_info

log = structlog.get_logger()

Flavour = Literal["nft", "legacy"]
FLAVOURS: tuple[Flavour, ...] = ("nft", "legacy")
TIMEOUT = 30.0
BRIDGE_NF = {
    "ipv4": "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "ipv6": "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
}
LEGACY_RECHECK = 30.0  # seconds: the longest a same-size edit of a legacy rule goes unseen by the check
_HINT = "check `iptables-save` as root, or choose another firewall backend in [firewall] backend"


def detect_flavour() -> Flavour | None:
    """Which iptables the host uses: ``iptables --version`` says ``(nf_tables)`` or ``(legacy)``; None: none."""
    exe = shutil.which("iptables")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if "nf_tables" in out:
        return "nft"
    return "legacy" if "iptables" in out else None


def binary(flavour: Flavour, family: IpFamily, verb: Literal["save", "restore"]) -> str:
    prog = "iptables" if family == "ipv4" else "ip6tables"
    return f"{prog}-{flavour}-{verb}"


def legacy_loaded(family: IpFamily) -> bool:
    """Whether this thread's netns has legacy x_tables in use (reading them must not load the modules for
    nothing).  /proc/thread-self: /proc/net would show the netns of the process's main thread."""
    names = f"/proc/thread-self/net/{'ip' if family == 'ipv4' else 'ip6'}_tables_names"
    try:
        return bool(Path(names).read_text().strip())
    except OSError:
        return False


class IptablesBackend:
    name = "iptables"

    def __init__(self, flavour: Flavour | None = None) -> None:
        found = flavour or detect_flavour()
        if found is None:
            raise FirewallError(
                "iptables backend: no iptables found; install the Debian package iptables or set "
                '[firewall] backend = "nftables"'
            )
        self.flavour: Flavour = found
        self._lock: asyncio.Lock | None = None
        self._last_hash = ""
        self._netns = "unknown"
        self._cache: tuple[Ruleset, dict[IpFamily, Rendered]] | None = None
        self._gen: GenReader | None = None  # iptables-nft: opened by the calling thread (the daemon's netns)
        # (ruleset, token, when): a comparison found netd's chains holding ruleset when the token was read
        self._synced: tuple[Ruleset, object, float] | None = None
        # (ruleset, its rendering, token read after the write): what netd's last successful write put there
        self._applied: tuple[Ruleset, dict[IpFamily, Rendered], object | None] | None = None
        self.deltas = 0  # port changes applied as a delta (tests and benches read it)

    # -------------------------------------------------------------------- protocol

    async def apply(self, ruleset: Ruleset) -> None:
        async with self._guard():
            synced, self._synced = self._synced, None
            if await self._apply_delta(ruleset, synced):
                return
            self._applied = None
            rendered = self._render(ruleset)
            saved = await self._save_all()
            results = await asyncio.gather(
                *(self._restore(f, render_restore(rendered[f], saved[f])) for f in IP_FAMILIES),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                applied = [f for f, r in zip(IP_FAMILIES, results, strict=True) if r is None]
                await self._undo(applied, {f: rendered_from_saved(saved[f]) for f in IP_FAMILIES})
                raise failed[0]
            self._applied = (ruleset, rendered, self._token())
            self._last_hash = rendered["ipv4"].digest
            self._netns = _netns()
            if not ruleset.bridge.empty:
                await self._ensure_bridge_nf()

    async def _apply_delta(self, ruleset: Ruleset, synced: tuple[Ruleset, object, float] | None) -> bool:
        """Only published ports changed since netd's last write, and nothing was written since (netd's chains
        hold what it wrote): send ``-D``/``-I``/``-A`` of the changed DNAT rules, no save (iptables_delta.py).
        False: the full apply must run (the kernel holds the previous rules again if the delta failed)."""
        if self._applied is None:
            return False
        old, old_rendered, written = self._applied
        delta = render_ipt_delta(old, ruleset, old_rendered)
        token = self._token()
        checked = synced is not None and _same(synced[0], old) and synced[1] == token
        if delta is None or token is None or not (token == written or checked):
            return False
        texts = [(f, t) for f, t in delta.texts.items() if t]
        results = await asyncio.gather(*(self._restore(f, t) for f, t in texts), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:  # a table may have committed (legacy commits per table): put the previous rules back
            self._applied = None
            log.warning("firewall_delta_failed", error=str(failed[0]))
            await self._undo([f for f, _ in texts], old_rendered)
            return False
        after = self._token()
        self._applied = (ruleset, delta.rendered, after)
        self._cache = (ruleset, delta.rendered)
        self._last_hash = delta.rendered["ipv4"].digest
        self.deltas += 1
        if (
            synced is not None
            and checked
            and after is not None
            and self._only_ours(token, after, sum(t.count("COMMIT\n") for _, t in texts))
        ):
            self._synced = (ruleset, after, synced[2])  # still in sync; the legacy recheck clock runs on
        return True

    def _only_ours(self, before: object, after: object, writes: int) -> bool:
        """Whether nothing but netd's ``writes`` table transactions changed the tables between the two tokens:
        with iptables-nft (which commits each ``COMMIT`` of the input on its own) the generation moved by exactly
        that many; legacy has no such count (the
        token is counts and sizes), so a foreign write made during the delta goes unseen until the next
        ``LEGACY_RECHECK`` comparison, which the kept timestamp does not postpone."""
        if self.flavour == "legacy":
            return True
        return isinstance(before, int) and after == (before + writes) & 0xFFFFFFFF

    async def in_sync(self, ruleset: Ruleset) -> bool:
        async with self._guard():
            token = self._token()  # read before the save: a write after it moves the token again
            synced, now = self._synced, time.monotonic()
            if (
                token is not None
                and synced is not None
                and synced[1] == token
                and (synced[0] is ruleset or synced[0] == ruleset)
                and now - synced[2] < (LEGACY_RECHECK if self.flavour == "legacy" else math.inf)
            ):
                return True
            rendered = self._render(ruleset)
            saved = await self._save_all()
            ok = all(in_sync(rendered[f], saved[f]) for f in IP_FAMILIES)
            self._synced = (ruleset, token, now) if ok and token is not None else None
            return ok

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()

    async def remove_all(self) -> None:
        async with self._guard():
            self._synced = self._applied = None
            saved = await self._save_all()
            await asyncio.gather(*(self._restore(f, render_removal(saved[f])) for f in IP_FAMILIES))
            self._last_hash = ""

    def describe(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "iptables": "nf_tables" if self.flavour == "nft" else "legacy",
            "chains": "NETD-FORWARD, NETD-POSTROUTING, NETD-PREROUTING, NETD-OUTPUT, NETD-PUBLISHED, "
            "NETD-ISOLATION, NETD-TO-*, NETD-FROM-*",
            "netns": self._netns,
            "last_applied": self._last_hash or "-",
        }

    # -------------------------------------------------------------------- helpers

    def _token(self) -> object | None:
        """What must not have moved for the last comparison to still hold; None: unknown (compare)."""
        if self.flavour == "nft":
            if self._gen is None:
                self._gen = GenReader()
            return self._gen.read()
        infos = tuple(table_info(f) if legacy_loaded(f) else "absent" for f in IP_FAMILIES)
        return None if None in infos else infos

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _render(self, ruleset: Ruleset) -> dict[IpFamily, Rendered]:
        if self._cache is None or not (self._cache[0] is ruleset or self._cache[0] == ruleset):
            self._cache = (ruleset, {f: render_chains(ruleset, f) for f in IP_FAMILIES})
        return self._cache[1]

    async def _undo(self, families: list[IpFamily], before: dict[IpFamily, Rendered]) -> None:
        """Put back the netd chains ``before`` in ``families`` (their half of a failed apply, or a delta's)."""
        for family in families:
            try:
                now = parse_save(await self._save(family))
                await self._restore(family, render_restore(before[family], now))
                log.warning("firewall_half_rolled_back", family=family)
            except FirewallError as e:  # the firewall check repairs it within a second; say so, keep the cause
                log.error("firewall_rollback_failed", family=family, error=e.message)

    async def _save_all(self) -> dict[IpFamily, Saved]:
        texts = await asyncio.gather(*(self._save(f) for f in IP_FAMILIES))
        return {f: parse_save(t) for f, t in zip(IP_FAMILIES, texts, strict=True)}

    async def _save(self, family: IpFamily) -> str:
        if self.flavour == "legacy" and not legacy_loaded(family):
            return ""
        return await _exec([binary(self.flavour, family, "save")], None, f"reading {family} rules")

    async def _restore(self, family: IpFamily, text: str) -> None:
        if not text:
            return
        argv = [binary(self.flavour, family, "restore"), "--noflush", "--wait=10"]
        await _exec(argv, text, f"applying netd's {family} rules")

    async def _ensure_bridge_nf(self) -> None:
        if not all(os.path.exists(p) for p in BRIDGE_NF.values()):
            try:
                await _exec(["modprobe", "br_netfilter"], None, "loading br_netfilter")
            except FirewallError as e:
                log.warning("br_netfilter_load_failed", error=e.message)
        for path in BRIDGE_NF.values():
            try:
                with open(path, "r+", encoding="ascii") as f:
                    if f.read().strip() != "1":
                        f.seek(0)
                        f.write("1")
                        log.info("bridge_nf_enabled", sysctl=path)
            except OSError as exc:
                raise FirewallError(
                    f"iptables backend: a network has icc off, which needs br_netfilter ({path}: {exc}); "
                    'run `modprobe br_netfilter`, or set [firewall] backend = "nftables"'
                ) from exc


async def _exec(argv: list[str], stdin: str | None, what: str) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise FirewallError(f"iptables: {what} failed: cannot run {argv[0]} ({exc}); {_HINT}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise FirewallError(f"iptables: {what} timed out after {TIMEOUT:.0f} s ({argv[0]}); {_HINT}") from None
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise FirewallError(f"iptables: {what} failed: {msg}; {_HINT}")
    return out.decode(errors="replace")


def _same(a: Ruleset, b: Ruleset) -> bool:
    return a is b or a == b


def _netns() -> str:
    try:
        return os.readlink("/proc/thread-self/ns/net")
    except OSError:
        return "unknown"


async def remove_everywhere(exclude: str | None = None) -> list[str]:
    """Remove netd's chains and jumps from every iptables flavour (but ``exclude``) present in this netns, for
    uninstall and for a switch to another backend; returns the flavours that had something of netd's.  Needs no
    daemon or API."""
    done: list[str] = []
    for flavour in FLAVOURS:
        if flavour == exclude or shutil.which(binary(flavour, "ipv4", "restore")) is None:
            continue
        if flavour == "legacy" and not any(legacy_loaded(f) for f in IP_FAMILIES):
            continue
        backend = IptablesBackend(flavour)
        saved = await backend._save_all()
        if any(render_removal(s) for s in saved.values()):
            await backend.remove_all()
            done.append(flavour)
    return done
