"""The firewall's rule model (pure data): verdicts, matches, rules, chains, sets and maps, the whole ``Ruleset``.

``netd.firewall.rules`` builds a ``Ruleset`` from the desired state; the backends (``nft_render``,
``iptables_render``) render one; nothing here knows a network or a backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Literal, NamedTuple

IPNet = IPv4Network | IPv6Network
Hook = Literal["forward", "postrouting", "prerouting", "output"]
CtState = Literal["established", "related", "new", "invalid"]
SetKey = Literal["ifname", "ipv4_addr", "ipv6_addr", "inet_proto", "inet_service"]
MapValue = Literal["verdict", "ipv4_addr", "ipv6_addr", "inet_service"] | tuple[SetKey, ...]

# Names of the fixed objects; per-network chains are "to-<key>" / "from-<key>".
SET_BRIDGES = "bridges"
MAP_TO_BRIDGE = "to_bridge"
MAP_FROM_BRIDGE = "from_bridge"
CHAIN_FORWARD = "forward"
CHAIN_POSTROUTING = "postrouting"
CHAIN_PREROUTING = "prerouting"
CHAIN_OUTPUT = "output"
CHAIN_PUBLISHED = "published"
# published-port maps by (IP version, keyed by host address?)
DNAT_MAPS: dict[tuple[int, bool], str] = {
    (4, True): "dnat4",
    (4, False): "dnat4_any",
    (6, True): "dnat6",
    (6, False): "dnat6_any",
}
LOOPBACK4 = IPv4Network("127.0.0.0/8")

# ---------------------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Accept:
    pass


@dataclass(frozen=True)
class Drop:
    pass


@dataclass(frozen=True)
class Masquerade:
    pass


@dataclass(frozen=True)
class Jump:
    chain: str


@dataclass(frozen=True)
class Dispatch:
    """Look ``key`` up in the verdict map ``map`` (a ``NamedSet`` with jump values); no match: next rule."""

    key: Literal["iif", "oif"]
    map: str


@dataclass(frozen=True)
class DnatMap:
    """DNAT to the (address, port) the map ``map`` holds for the packet's ``[daddr .] l4proto . dport``
    (``by_daddr``); IPv4 (``ip``) or IPv6 (``ip6``) packets only; no element: next rule."""

    map: str
    family: Literal["ip", "ip6"]
    by_daddr: bool


Verdict = Accept | Drop | Masquerade | Jump | Dispatch | DnatMap


# ---------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Match:
    """All given fields must match (logical AND); an empty Match matches every packet."""

    iif: str | None = None
    oif: str | None = None
    oif_not: str | None = None
    iif_in: str | None = None  # name of an ifname NamedSet
    oif_in: str | None = None
    saddr: IPNet | None = None
    daddr: IPNet | None = None
    ct_state: frozenset[CtState] | None = None
    ct_dnat: bool = False  # ct status dnat: the connection's destination was translated
    fib_local: bool = False  # fib daddr type local: addressed to the host itself

    @property
    def family(self) -> Literal["ip", "ip6"] | None:
        """The address family the match implies (None: any)."""
        for net in (self.saddr, self.daddr):
            if net is not None:
                return "ip" if net.version == 4 else "ip6"
        return None


@dataclass(frozen=True)
class Rule:
    match: Match
    verdict: Verdict
    comment: str  # "netd:<network id>" or "netd:<what>"; every rule says why it exists


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]
    hook: Hook | None = None  # None: a regular chain reached only by jumps


class Element(NamedTuple):
    """A tuple, not a dataclass: hashing and comparing thousands of them (a map's delta) stays in C."""

    key: tuple[str, ...]  # one value per SetKey of the set (a concatenation when more than one)
    value: Verdict | str | tuple[str, ...] | None = None  # maps only (a tuple: a concatenated value)


@dataclass(frozen=True)
class NamedSet:
    """A named set (``value is None``) or map; lookups stay O(1) however many elements it holds."""

    name: str
    key: tuple[SetKey, ...]
    elements: tuple[Element, ...]
    value: MapValue | None = None
    interval: bool = False


@dataclass(frozen=True)
class Table:
    chains: tuple[Chain, ...] = ()
    sets: tuple[NamedSet, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.chains

    def chain(self, name: str) -> Chain:
        for ch in self.chains:
            if ch.name == name:
                return ch
        raise KeyError(name)


@dataclass(frozen=True)
class Ruleset:
    """Everything netd wants in the packet filter.  ``ip``: routed IPv4/IPv6; ``bridge``: bridged frames."""

    ip: Table = field(default_factory=Table)
    bridge: Table = field(default_factory=Table)

    @property
    def empty(self) -> bool:
        return self.ip.empty and self.bridge.empty
