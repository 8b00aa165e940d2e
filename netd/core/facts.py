"""What netd-ctl doctor looks at (pure data): the host facts the kernel layer gathers (``netd.kernel.hostfacts``)
and the daemon's own, which ``netd.ops.doctor`` turns into findings.  Below both, so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field

from netd.core.model import IPNetwork


@dataclass(frozen=True)
class ForwardChain:
    """A base chain on the forward hook of a table netd does not own."""

    family: str
    table: str
    chain: str
    policy: str  # "accept" | "drop"


@dataclass
class Facts:
    sysctls: dict[str, str] = field(default_factory=dict)  # absent key: not readable (e.g. module not loaded)
    forward_chains: list[ForwardChain] = field(default_factory=list)
    foreign_tables: list[str] = field(default_factory=list)  # "family name" of tables that are not netd's
    br_netfilter: bool = False
    routes: list[tuple[IPNetwork, str]] = field(default_factory=list)  # (prefix, device) of the main table
    default_dev: str | None = None
    link_mtu: dict[str, int] = field(default_factory=dict)
    global_links: list[str] = field(default_factory=list)  # non-netd links with a global address
    modules: dict[str, bool] = field(default_factory=dict)  # feature -> available
    last_success_age: float | None = None  # seconds since the last error-free full reconcile (None: never)
    reconcile_interval: float = 30.0
    reconcile_errors: dict[str, str] = field(default_factory=dict)
    mount_ns: tuple[bool, str] = (True, "")
