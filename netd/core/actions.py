"""What a reconcile looks at and what it may do: the scope, the observed kernel, and the plan's actions (pure).

The planner (``netd.engine.plan``) and the drivers (``netd.drivers``) produce these; the reconciler applies them
in the plan's order and nothing else, so ``netd-ctl plan``/``check`` show every effect a reconcile would have.  An
action names its ``owner`` (the object its failure is reported against) and says what it does (``describe``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netd.core.linkspec import (
    BridgeSpec,
    ChildSpec,
    ObservedChild,
    ObservedHost,
    ObservedPeer,
    ParentSpec,
    ShimSpec,
    VethSpec,
)
from netd.core.ruleset import Ruleset

MISSING = "missing"  # the drift reason when the observe found no object of the name


@dataclass(frozen=True)
class Scope:
    """Which objects a reconcile looks at; ``None`` fields mean "all of that kind"."""

    networks: frozenset[str] | None = None  # network ids
    endpoints: frozenset[str] | None = None  # endpoint ids
    netns: frozenset[str] | None = None  # netns names
    links: frozenset[str] = frozenset()  # extra link names to observe (those of objects being removed)
    targets: frozenset[str] = frozenset()  # extra Endpoint.target keys to look into for macvlan/ipvlan children
    # endpoints whose namespace side (addresses, routes, MTU) changed in the desired state: re-applied even when
    # the host side is as wanted (a reload adding IPv6 or a new MTU to the default bridge's endpoints)
    refresh: frozenset[str] = frozenset()
    # endpoints whose namespace side (addresses, routes, state, MAC, MTU of their interface) is observed and
    # repaired; None: every endpoint in scope (full passes, check).  A connect names none: it just made them.
    peers: frozenset[str] | None = None

    @classmethod
    def everything(cls) -> Scope:
        return cls()

    @classmethod
    def of(
        cls,
        *,
        networks: Iterable[str] = (),
        endpoints: Iterable[str] = (),
        netns: Iterable[str] = (),
        peers: Iterable[str] = (),
    ) -> Scope:
        return cls(
            networks=frozenset(networks),
            endpoints=frozenset(endpoints) | frozenset(peers),
            netns=frozenset(netns),
            peers=frozenset(peers),
        )

    @property
    def is_full(self) -> bool:
        return self.networks is None and self.endpoints is None and self.netns is None

    def has_network(self, net_id: str) -> bool:
        return self.networks is None or net_id in self.networks

    def has_endpoint(self, ep_id: str) -> bool:
        return self.endpoints is None or ep_id in self.endpoints

    def has_peer(self, ep_id: str) -> bool:
        return ep_id in self.peers if self.peers is not None else self.has_endpoint(ep_id)

    def has_netns(self, name: str) -> bool:
        return self.netns is None or name in self.netns


@dataclass(frozen=True)
class FirewallSeen:
    """The packet filter as a reconcile sees it: the rules the desired state wants, those netd applied last
    (None: none yet in this process) and whether the kernel still holds them (checked on full passes)."""

    wanted: Ruleset
    applied: Ruleset | None
    in_sync: bool = True


@dataclass
class Observed:
    host: ObservedHost
    netns_alive: set[str]  # names of netd's netns (desired or marked owned) whose file is a live netns
    netns_owned: set[str]  # netns names netd created earlier (its markers)
    sysctls: dict[str, str] = field(default_factory=dict)
    children: dict[str, ObservedChild] = field(default_factory=dict)  # owned macvlan/ipvlan by endpoint id
    peers: dict[str, ObservedPeer] = field(default_factory=dict)  # endpoints' namespace side, by endpoint id
    accept_ra: dict[str, str] = field(default_factory=dict)  # foreign links' accept_ra (read when IPv6 forwards)
    extra: dict[str, Any] = field(default_factory=dict)  # what a driver observed for itself (by driver name)
    firewall: FirewallSeen | None = None  # None: the firewall is not part of this plan
    # what netd changed on things not its own (netd.engine.hostchanges): host sysctls, addresses on adopted bridges
    changed_sysctls: frozenset[str] = frozenset()
    changed_addresses: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # net id -> bridge


# -------------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class EnsureNetns:
    name: str
    owner: str  # the netns name: errors are reported against it
    host: bool = False  # --network host: a name for netd's own namespace, not a new one


@dataclass(frozen=True)
class RemoveNetns:
    name: str
    owner: str


@dataclass(frozen=True)
class MarkNetns:
    """The marker that says netd created the named netns (so a later reconcile may remove it)."""

    name: str
    owned: bool
    owner: str


@dataclass(frozen=True)
class EnsureBridge:
    spec: BridgeSpec
    owner: str
    reason: str


@dataclass(frozen=True)
class EnsureVeth:
    spec: VethSpec
    owner: str
    reason: str
    seen_missing: bool = False  # the observe found no link of the name: the kernel may create without a check
    reconfigure: bool = False  # Scope.refresh: re-apply the namespace side though the host side is right
    repair_peer: bool = False  # the namespace side drifted (addresses, routes, state, MAC, MTU): set it again


@dataclass(frozen=True)
class DeleteLinks:
    ifnames: tuple[str, ...]
    owner: str


@dataclass(frozen=True)
class SetSysctl:
    key: str
    value: str
    owner: str = "host"
    best_effort: bool = False  # a failure is logged, not an error of the owner (route_localnet)


@dataclass(frozen=True)
class ApplyFirewall:
    """Load netd's whole ruleset (one transaction); a failure is an error of every network in ``networks``."""

    rules: Ruleset
    reason: str
    networks: tuple[str, ...] = ()
    owner: str = "firewall"


@dataclass(frozen=True)
class FlushConntrack:
    """Forget the UDP conntrack entries of published ports that appeared, went or changed: a UDP client that
    never pauses keeps its entry (and its old destination) forever.  Only after the firewall was applied."""

    udp: tuple[tuple[int, str | None, int], ...]  # (IP version, host address or None: any, host port)
    owner: str = "firewall"
    best_effort: bool = True
    requires: str = "firewall"  # skipped when the action of this owner failed


@dataclass(frozen=True)
class EnsureParent:
    spec: ParentSpec
    owner: str  # network id
    reason: str


@dataclass(frozen=True)
class EnsureShim:
    spec: ShimSpec
    owner: str
    reason: str


@dataclass(frozen=True)
class EnsureChild:
    spec: ChildSpec
    owner: str  # endpoint id
    reason: str


@dataclass(frozen=True)
class DeleteChildren:
    children: tuple[tuple[str, str], ...]  # (namespace path, ifname)
    owner: str


class DriverAction:
    """A driver's own kind of change (say overlay's FDB and neighbour entries): the reconciler applies it
    through the kernel facade without knowing the type.  Subclasses are frozen dataclasses with ``owner``."""

    owner: str

    def describe(self) -> str:
        raise NotImplementedError

    async def apply(self, kernel: Any) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class RestoreSysctls:
    """Put back the host sysctls netd changed (IPv6 forwarding, accept_ra) once no network needs them; only
    those that still hold netd's value (someone else's later change is theirs)."""

    keys: tuple[str, ...]
    owner: str = "host"
    best_effort: bool = True  # tried again by the next reconcile


@dataclass(frozen=True)
class RemoveAdoptedAddresses:
    """The gateway addresses netd added to a foreign bridge a network adopted, after that network."""

    bridge: str
    addresses: tuple[str, ...]
    owner: str  # the (gone) network's id
    best_effort: bool = True


Action = (
    DriverAction
    | EnsureNetns
    | RemoveNetns
    | MarkNetns
    | ApplyFirewall
    | FlushConntrack
    | RestoreSysctls
    | RemoveAdoptedAddresses
    | EnsureBridge
    | EnsureVeth
    | DeleteLinks
    | SetSysctl
    | EnsureParent
    | EnsureShim
    | EnsureChild
    | DeleteChildren
)


def dedupe_key(action: Action) -> tuple[str, str] | None:
    """Actions with one key are one change (a parent two networks share is ensured once, by the first)."""
    if isinstance(action, EnsureParent):
        return ("link", action.spec.ifname)
    return None


def describe(action: Action) -> str:
    match action:
        case EnsureNetns(name=name, host=host):
            return f"name the host's namespace netns {name}" if host else f"create netns {name}"
        case RemoveNetns(name=name):
            return f"remove netns {name}"
        case MarkNetns(name=name, owned=owned):
            return f"mark netns {name} as netd's" if owned else f"forget that netd made netns {name}"
        case ApplyFirewall(reason=reason):
            return f"load netd's firewall rules ({reason})"
        case RestoreSysctls(keys=keys):
            return "put back host sysctls netd changed: " + ", ".join(keys)
        case RemoveAdoptedAddresses(bridge=bridge, addresses=addrs):
            return f"remove the addresses netd added to adopted bridge {bridge}: " + ", ".join(addrs)
        case FlushConntrack(udp=udp):
            return "forget UDP conntrack entries to " + ", ".join(
                f"{ip or '*'}:{port}" if v == 4 else f"[{ip or '*'}]:{port}" for v, ip, port in udp
            )
        case EnsureBridge(spec=spec, reason=reason):
            return f"ensure bridge {spec.ifname} ({reason})"
        case EnsureVeth(spec=spec, reason=reason):
            return f"ensure veth {spec.host_ifname} -> {spec.netns.path}:{spec.peer_ifname} ({reason})"
        case DeleteLinks(ifnames=names):
            return "delete " + ", ".join(names)
        case SetSysctl(key=key, value=value):
            return f"sysctl {key}={value}"
        case EnsureParent(spec=spec, reason=reason):
            return f"ensure parent {spec.ifname} ({spec.kind}, {reason})"
        case EnsureShim(spec=spec, reason=reason):
            return f"ensure host_access shim {spec.ifname} on {spec.parent} ({reason})"
        case EnsureChild(spec=spec, reason=reason):
            return f"ensure {spec.kind} {spec.netns.path}:{spec.peer_ifname} on {spec.parent} ({reason})"
        case DeleteChildren(children=children):
            return "delete " + ", ".join(f"{path}:{name}" for path, name in children)
        case DriverAction():
            return action.describe()
    return repr(action)


def owners(action: Action) -> tuple[str, ...]:
    """The objects an action's failure is reported against."""
    if isinstance(action, ApplyFirewall):
        return (action.owner, *action.networks)
    return (action.owner,)
