"""What netd changed on things that are not its own, so that it can put them back.

Two kinds: host-wide sysctls (``net.ipv6.conf.all.forwarding`` and the uplinks' ``accept_ra`` 1 -> 2, set when
the first IPv6 network comes) and the gateway addresses netd added to a foreign bridge a network adopted.  Each
change is recorded (the value found before, the value netd set; the addresses that were not there before) and
written to ``<state_dir>/host-changes.json`` *before* the kernel is touched, so a restart still knows.  Putting a
sysctl back only happens while it still holds the value netd set: a value someone else changed since is theirs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_interface
from pathlib import Path
from typing import Any, Protocol

import structlog

from netd.core.errors import NetdError
from netd.core.linkspec import BridgeSpec, Iface, ObservedHost

log = structlog.get_logger()

FILE_NAME = "host-changes.json"


@dataclass
class SysctlChange:
    original: str
    value: str  # what netd set


@dataclass
class HostChanges:
    path: Path
    sysctls: dict[str, SysctlChange] = field(default_factory=dict)
    # network id -> (bridge, addresses netd added to it, as "ip/prefixlen")
    addresses: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> HostChanges:
        path = state_dir / FILE_NAME
        out = cls(path)
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return out
        except (OSError, ValueError) as e:  # losing this record only means netd puts back less: never fatal
            log.error("host_changes_unreadable", path=str(path), error=str(e), note="nothing will be restored")
            return out
        for key, ch in data.get("sysctls", {}).items():
            out.sysctls[key] = SysctlChange(str(ch["original"]), str(ch["value"]))
        for net_id, (bridge, addrs) in data.get("addresses", {}).items():
            out.addresses[net_id] = (str(bridge), [str(a) for a in addrs])
        return out

    def save(self) -> None:
        """Write the record completely (fsync, rename, fsync of the directory) or raise OSError."""
        data = {
            "sysctls": {k: {"original": c.original, "value": c.value} for k, c in sorted(self.sysctls.items())},
            "addresses": {k: [b, a] for k, (b, a) in sorted(self.addresses.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(data, indent=1) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- sysctls ---------------------------------------------------------------------------------------------

    def will_set(self, key: str, current: str, value: str) -> None:
        """Record ``key`` before netd sets it (the first original is kept: that is the host's own)."""
        if key in self.sysctls or current == value:
            return
        self.sysctls[key] = SysctlChange(current, value)
        self.save()

    def sysctls_to_restore(self, current: Mapping[str, str | None]) -> list[tuple[str, str]]:
        """(key, original) for each recorded sysctl that still holds netd's value; forwarding first (accept_ra
        2 and 1 mean the same without it).  ``current``: the values now (None: unreadable)."""
        out = []
        for key in sorted(self.sysctls, key=lambda k: (k.endswith("accept_ra"), k)):
            ch = self.sysctls[key]
            now = current.get(key)
            if now is None or now != ch.value:
                log.info(
                    "sysctl_not_restored", key=key, now=now, netd_set=ch.value, reason="changed by someone else"
                )
                continue
            out.append((key, ch.original))
        return out

    def forget_sysctls(self) -> None:
        self.sysctls.clear()
        self.save()

    # -- addresses on adopted bridges --------------------------------------------------------------------------

    def will_add(self, net_id: str, bridge: str, addresses: list[str]) -> None:
        have = self.addresses.get(net_id, (bridge, []))[1]
        merged = have + [a for a in addresses if a not in have]
        if merged != have or net_id not in self.addresses:
            self.addresses[net_id] = (bridge, merged)
            self.save()

    def forget_addresses(self, net_id: str) -> None:
        if self.addresses.pop(net_id, None) is not None:
            self.save()


class Kernel(Protocol):
    """The part of the kernel facade (netd.kernel.facade.Kernel) the undo needs."""

    async def get_sysctl(self, key: str) -> str: ...
    async def set_sysctl(self, key: str, value: str) -> None: ...
    async def observe(self, names: Collection[str] | None = None) -> ObservedHost: ...
    async def remove_addresses(self, ifname: str, addresses: Sequence[Iface]) -> list[Iface]: ...


async def record_adopted(changes: HostChanges, kernel: Kernel, spec: BridgeSpec) -> None:
    """Remember the addresses netd is about to add to a foreign bridge (not those it already has)."""
    seen = (await kernel.observe([spec.ifname])).by_name.get(spec.ifname)
    if seen is not None:
        added = [str(a) for a in spec.addresses if a not in seen.addresses]
        if added:
            changes.will_add(spec.owner, spec.ifname, added)


async def restore_sysctls(changes: HostChanges, kernel: Kernel) -> None:
    """Put back the recorded sysctls that still hold netd's value, then forget the record (the IPv6 ones, after
    the last IPv6 network: the reconciler's ``RestoreSysctls`` action)."""
    current: dict[str, str | None] = {}
    for key in changes.sysctls:
        try:
            current[key] = (await kernel.get_sysctl(key)).strip()
        except (NetdError, OSError):
            current[key] = None
    for key, original in changes.sysctls_to_restore(current):
        await kernel.set_sysctl(key, original)
        log.info("sysctl_restored", key=key, value=original)
    changes.forget_sysctls()


async def remove_adopted(changes: HostChanges, kernel: Kernel, net_id: str) -> None:
    """Remove the addresses netd added to the bridge a gone network adopted (``RemoveAdoptedAddresses``)."""
    bridge, addrs = changes.addresses[net_id]
    await kernel.remove_addresses(bridge, [ip_interface(a) for a in addrs])
    changes.forget_addresses(net_id)


def restore_sysctls_now(state_dir: Path) -> list[str]:
    """For ``netd --purge-firewall`` (no daemon): put back the recorded sysctls of this network namespace."""
    from netd.kernel.sysctl import read_sysctl, write_sysctl

    changes = HostChanges.load(state_dir)
    current: dict[str, str | None] = {}
    for key in changes.sysctls:
        try:
            current[key] = read_sysctl(key)
        except (OSError, NetdError):
            current[key] = None
    done = []
    for key, original in changes.sysctls_to_restore(current):
        try:
            write_sysctl(key, original)
            done.append(f"{key}={original}")
        except (OSError, NetdError) as e:
            log.error("sysctl_restore_failed", key=key, error=str(e))
    if changes.sysctls:
        changes.forget_sysctls()
    return done
