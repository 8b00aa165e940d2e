"""Choose a firewall backend: by name, or ``auto`` from a probe of the host's packet filter.

``auto`` picks iptables when another tool's iptables rules are present (Docker's ``DOCKER``/``DOCKER-USER``
chains, ufw's ``ufw-*`` chains, firewalld's iptables-backend chains, a FORWARD policy of DROP) or when
libnftables is missing: a DROP in those tools' chains wins over any ACCEPT in netd's own nftables table, so
netd's accepts must go into their iptables hooks.  Otherwise nftables.  The decision (``decide``) is pure;
``probe`` gathers the facts in the daemon's network namespace.
"""

from __future__ import annotations

import ctypes
import importlib.util
import subprocess
from dataclasses import dataclass, field

import structlog

from netd.core.errors import FirewallError, InvalidError
from netd.core.ruleset import Ruleset
from netd.firewall.base import FirewallBackend
from netd.firewall.iptables_render import parse_save

log = structlog.get_logger()

KINDS = ("auto", "nftables", "iptables", "none")
FIREWALLD_CHAINS = ("INPUT_ZONES", "FORWARD_IN_ZONES", "FORWARD_direct")


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
    """The backend for ``kind`` ("auto", "nftables", "iptables" or "none")."""
    return choose_backend(kind)[0]


def choose_backend(kind: str) -> tuple[FirewallBackend, str]:
    """The backend for ``kind`` and why it was chosen (for ``netd-ctl status``)."""
    if kind == "none":
        return NoneBackend(), "configured: none"
    if kind == "nftables":
        from netd.firewall.nftables import NftablesBackend

        return NftablesBackend(), "configured: nftables"
    if kind == "iptables":
        from netd.firewall.iptables import IptablesBackend

        ipt = IptablesBackend()
        return ipt, f"configured: iptables ({ipt.describe()['iptables']})"
    if kind == "auto":
        chosen, why = _auto_kind()
        backend, _ = choose_backend(chosen)
        if backend.name == "iptables":
            why += f"; iptables is {backend.describe()['iptables']}"
        return backend, f"auto: {why}"
    raise InvalidError(
        f"firewall backend {kind!r} is unknown; use one of: {', '.join(KINDS)}", field="firewall_backend"
    )


# ---------------------------------------------------------------------------------------------------- auto


@dataclass(frozen=True)
class HostFacts:
    iptables: bool  # an iptables binary is installed
    libnftables: bool  # the nftables backend can load
    chains: frozenset[str] = field(default_factory=frozenset)  # chain names of the filter and nat tables
    forward_policy: str = "ACCEPT"


def decide(facts: HostFacts) -> tuple[str, str]:
    """Pure: the backend ``auto`` picks for ``facts``, and why."""
    if not facts.iptables:
        return "nftables", "no iptables installed"
    docker = sorted(c for c in facts.chains if c in ("DOCKER", "DOCKER-USER"))
    if docker:
        return "iptables", f"Docker's iptables chains are present ({', '.join(docker)})"
    if any(c.startswith("ufw-") for c in facts.chains):
        return "iptables", "ufw's iptables chains are present"
    if any(c in facts.chains for c in FIREWALLD_CHAINS):
        return "iptables", "firewalld uses its iptables backend"
    if facts.forward_policy == "DROP":
        return "iptables", "the FORWARD policy is DROP"
    if not facts.libnftables:
        return "iptables", "libnftables is missing"
    return "nftables", "no other firewall tool's iptables rules found"


def probe() -> HostFacts:
    """Look at this network namespace's iptables (the flavour the host uses) and at libnftables."""
    from netd.firewall.iptables import binary, detect_flavour, legacy_loaded

    flavour = detect_flavour()
    if flavour is None:
        return HostFacts(iptables=False, libnftables=libnftables_available())
    text = ""
    if flavour == "nft" or legacy_loaded("ipv4"):
        try:
            text = subprocess.run(
                [binary(flavour, "ipv4", "save")], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("firewall_probe_failed", error=str(exc))
    saved = parse_save(text)
    chains = frozenset(c for t in ("filter", "nat") if t in saved for c in saved[t].chains)
    policy = saved["filter"].chains.get("FORWARD", "ACCEPT") if "filter" in saved else "ACCEPT"
    return HostFacts(iptables=True, libnftables=libnftables_available(), chains=chains, forward_policy=policy)


def libnftables_available() -> bool:
    if importlib.util.find_spec("nftables") is None:
        return False
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        return False
    return True


def _auto_kind() -> tuple[str, str]:
    return decide(probe())


# ---------------------------------------------------------------------------------------------------- switching


async def cleanup_other(backend: FirewallBackend) -> list[str]:
    """Remove what netd owned in the backends it does not use now (a switch of backend, or ``none``).

    Called once at start, before the first reconcile.  Returns what was removed (for the log); failures are
    logged, never raised: the backend in use must still start.
    """
    removed: list[str] = []
    if backend.name != "nftables":
        removed += await _remove_nft()
    # for the iptables backend: the other flavour only (the host's iptables alternative changed)
    removed += await _remove_iptables(exclude=getattr(backend, "flavour", None))
    if removed:
        log.info("firewall_switched_cleanup", backend=backend.name, removed=removed)
    return removed


async def purge_all() -> list[str]:
    """Remove everything netd owns in every firewall backend of this netns (``uninstall --purge``); no API."""
    return await _remove_nft() + _remove_own_tables() + await _remove_iptables() + await _remove_lb_chains()


def _remove_own_tables() -> list[str]:
    """The tables of the services' load balancer and of encrypted overlays (host namespace's copies)."""
    if not libnftables_available():
        return []
    from netd.firewall import esp_marks, lb_nft
    from netd.firewall.libnft import open_context

    removed: list[str] = []
    try:
        ctx = open_context("uninstall")
        for family, table in ((lb_nft.FAMILY, lb_nft.TABLE), ("inet", esp_marks.TABLE)):
            rc, _out, _err = ctx.cmd(f"list table {family} {table}")
            if rc != 0:
                continue  # not there
            rc, _out, err = ctx.cmd(f"delete table {family} {table}")
            if rc != 0:
                log.warning("firewall_cleanup_failed", table=f"{family} {table}", error=err.strip())
                continue
            removed.append(f"nftables {family} {table}")
    except FirewallError as e:
        log.warning("firewall_cleanup_failed", backend="nftables", error=e.message)
    return removed


async def _remove_lb_chains() -> list[str]:
    """The load balancer's ``NETDLB-*`` nat chains and jumps (the routing mesh's, in this namespace) in every
    iptables flavour present."""
    import shutil

    from netd.firewall.iptables import FLAVOURS, binary, legacy_loaded
    from netd.firewall.iptables_rule import IP_FAMILIES
    from netd.firewall.lb import IptablesLbBackend

    removed: list[str] = []
    for flavour in FLAVOURS:
        if shutil.which(binary(flavour, "ipv4", "restore")) is None:
            continue
        if flavour == "legacy" and not any(legacy_loaded(f) for f in IP_FAMILIES):
            continue
        lb = IptablesLbBackend(flavour=flavour)
        try:
            if lb.holds_rules():
                await lb.remove_all()
                removed.append(f"iptables-{flavour} NETDLB")
        except FirewallError as e:
            log.warning("firewall_cleanup_failed", backend=f"iptables-{flavour} NETDLB", error=e.message)
        finally:
            lb.close()
    return removed


async def _remove_nft() -> list[str]:
    if not libnftables_available():
        return []
    from netd.firewall.nftables import NftablesBackend

    nft = NftablesBackend()
    try:
        had = not await nft.in_sync(Ruleset())  # an empty ruleset is "in sync" when no netd table exists
        if had:
            await nft.remove_all()
        return ["nftables"] if had else []
    except FirewallError as e:
        log.warning("firewall_cleanup_failed", backend="nftables", error=e.message)
        return []
    finally:
        nft.close()


async def _remove_iptables(exclude: str | None = None) -> list[str]:
    from netd.firewall.iptables import remove_everywhere

    try:
        return [f"iptables-{f}" for f in await remove_everywhere(exclude)]
    except FirewallError as e:
        log.warning("firewall_cleanup_failed", backend="iptables", error=e.message)
        return []
