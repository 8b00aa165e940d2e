"""Services' load balancing, pure part: the model (``Service``, ``Backend``) and the desired LB ruleset of a node.

No kernel import: the renderers (``lb_nft.py``, ``lb_iptables.py``) turn an ``LbRuleset`` into rules and the
backend (``lb.py``) applies them.  The shape follows kube-proxy's nftables mode and Docker's routing mesh:

* a **VIP** port (``vip`` endpoint mode) is one element of a dispatch map ``VIP . proto . port → spread chain``;
* a **published** port (``mode=ingress``, the routing mesh) is one element ``proto . port → spread chain`` of a
  second map, consulted only for packets to one of the node's own addresses, on every node, also on nodes
  without a task; it spreads over the tasks' addresses on the ingress network;
* a ``mode=host`` published port exists only on nodes with a task and spreads over the local tasks only;
* a **spread** chain picks one of its N endpoints: ``numgen random mod N`` (even spread), or ``jhash ip saddr
  mod N`` for ``stickiness=source-ip`` (the same client address lands on the same task while the set is
  unchanged);
* an **endpoint** chain DNATs to one ``address:port``; it is shared by every spread that targets that task
  port, so a task joining or leaving touches its own endpoint chain, the spread chains that list it and
  nothing else — a delta, never a rebuild (issue 14's "flat to 1000").

VIP and mesh connections are masqueraded on the way out (the spread chain sets ``MASQ_MARK``): a reply must
come back through the node that did the DNAT, as in Docker's ingress sandbox, which SNATs to its ingress
address.  A node's ruleset with an ingress source (``LbNode.ingress_source``, the node's own address on the
ingress network) SNATs to that address rather than masquerading: the ingress bridge also holds the network's
gateway, the same on every node, which a masquerade would pick and a task on another node would answer
locally.  ``mode=host`` keeps the client's address, as a plain ``-p`` port does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address
from typing import Literal

Proto = Literal["tcp", "udp"]
PublishMode = Literal["ingress", "host"]
EndpointMode = Literal["vip", "dnsrr"]
Stickiness = Literal["none", "source-ip"]
SpreadKind = Literal["vip", "mesh", "host"]

PROTOS: tuple[Proto, ...] = ("tcp", "udp")
PUBLISH_MODES: tuple[PublishMode, ...] = ("ingress", "host")
ENDPOINT_MODES: tuple[EndpointMode, ...] = ("vip", "dnsrr")
STICKINESS: tuple[Stickiness, ...] = ("none", "source-ip")

# Packet-mark bit "masquerade this LB connection", set in a spread chain, tested and cleared in postrouting.
# Distinct from kube-proxy's 0x4000/0x8000 and below Calico's 0xffff0000 range.
MASQ_MARK = 0x00100000
JHASH_SEED = 0x6E657464  # "netd": a fixed seed, so every node (and a restart) maps a client to the same slot

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class LbInputError(ValueError):
    """Bad service input: ``field`` names what is wrong; the message says why and what to do."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class PortSpec:
    proto: Proto
    published: int | None  # None: not published (reachable only through the VIP)
    target: int
    mode: PublishMode = "ingress"


@dataclass(frozen=True)
class Backend:
    """One address of one task: ``task`` ties the addresses of one task on the service's networks together."""

    task: str
    address: IPv4Address
    network: str
    node: str


@dataclass(frozen=True)
class Service:
    name: str
    vips: tuple[tuple[str, IPv4Address], ...]  # (network, VIP), in the service's network order
    ports: tuple[PortSpec, ...]
    endpoint_mode: EndpointMode = "vip"
    stickiness: Stickiness = "none"
    backends: tuple[Backend, ...] = ()

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.vips)


@dataclass(frozen=True)
class LbNode:
    """The node the ruleset is built for."""

    name: str
    ingress_network: str | None = None  # where the routing mesh sends published-port connections
    ingress_source: IPv4Address | None = None  # this node's own address there: mesh connections SNAT to it


@dataclass(frozen=True, order=True)
class Endpoint:
    address: IPv4Address
    proto: Proto
    port: int

    @property
    def chain(self) -> str:
        return f"ep-{self.address}-{self.proto}-{self.port}"


@dataclass(frozen=True)
class Spread:
    chain: str
    kind: SpreadKind
    sticky: bool
    endpoints: tuple[Endpoint, ...]  # sorted: the order decides which slot a hash lands on

    @property
    def masquerade(self) -> bool:
        return self.kind != "host"


@dataclass(frozen=True)
class LbRuleset:
    vips: Mapping[tuple[IPv4Address, Proto, int], str] = field(default_factory=dict)  # → spread chain
    published: Mapping[tuple[Proto, int], str] = field(default_factory=dict)  # → spread chain
    spreads: Mapping[str, Spread] = field(default_factory=dict)
    snat_to: IPv4Address | None = None  # marked connections SNAT to this address (else: masquerade)

    @property
    def empty(self) -> bool:
        return not self.spreads

    @cached_property
    def _endpoints(self) -> frozenset[Endpoint]:
        return frozenset(e for s in self.spreads.values() for e in s.endpoints)

    def endpoints(self) -> frozenset[Endpoint]:
        return self._endpoints

    def sticky(self) -> bool:
        return any(s.sticky for s in self.spreads.values())


# ------------------------------------------------------------------------------------------------ validation


def validate_service(svc: Service) -> None:
    """Raise ``LbInputError`` naming the field for a service that cannot be rendered."""
    if not _NAME_RE.match(svc.name):
        raise LbInputError("name", f"{svc.name!r} is not a service name: use 1-63 letters, digits, '_', '.', '-'")
    if svc.endpoint_mode not in ENDPOINT_MODES:
        raise LbInputError("endpoint_mode", f"{svc.endpoint_mode!r} is not one of vip, dnsrr")
    if svc.stickiness not in STICKINESS:
        raise LbInputError("stickiness", f"{svc.stickiness!r} is not one of none, source-ip")
    if not svc.vips:
        raise LbInputError("networks", f"service {svc.name} is on no network: give at least one --network")
    nets = [n for n, _ in svc.vips]
    if len(set(nets)) != len(nets):
        raise LbInputError("networks", f"service {svc.name} names a network twice: give each --network once")
    for net in nets:
        if not _NAME_RE.match(net):
            raise LbInputError("networks", f"{net!r} is not a network name")
    seen: set[tuple[str, int]] = set()
    for p in svc.ports:
        if p.proto not in PROTOS:
            raise LbInputError("ports.proto", f"{p.proto!r} is not tcp or udp")
        if p.mode not in PUBLISH_MODES:
            raise LbInputError("ports.mode", f"{p.mode!r} is not ingress or host")
        for what, n in (("target", p.target), ("published", p.published)):
            if n is not None and not 1 <= n <= 65535:
                raise LbInputError(f"ports.{what}", f"{n} is not a port (1-65535)")
        if p.published is not None:
            if (p.proto, p.published) in seen:
                raise LbInputError("ports.published", f"{p.published}/{p.proto} is published twice in {svc.name}")
            seen.add((p.proto, p.published))
    for b in svc.backends:
        if b.network not in nets:
            raise LbInputError(
                "backends.network",
                f"task {b.task} of {svc.name} is on {b.network}, which the service is not on: connect it to one "
                f"of {', '.join(nets)}",
            )


# ------------------------------------------------------------------------------------------------ building


def build_lb(services: Iterable[Service], node: LbNode) -> LbRuleset:
    """The desired LB ruleset of ``node`` for ``services`` (validated; conflicts raise ``LbInputError``)."""
    vips: dict[tuple[IPv4Address, Proto, int], str] = {}
    published: dict[tuple[Proto, int], str] = {}
    owner: dict[tuple[Proto, int], str] = {}
    vip_owner: dict[tuple[IPv4Address, Proto, int], str] = {}
    spreads: dict[str, Spread] = {}
    for svc in sorted(services, key=lambda s: s.name):
        validate_service(svc)
        sticky = svc.stickiness == "source-ip"
        vip_ports = sorted({(p.proto, p.target): p for p in svc.ports}.values(), key=lambda p: (p.proto, p.target))
        for p in vip_ports if svc.endpoint_mode == "vip" else []:
            for net, vip in svc.vips:
                if (vip, p.proto, p.target) in vip_owner:
                    raise LbInputError(
                        "vips", f"{vip} is the VIP of {vip_owner[(vip, p.proto, p.target)]} too: give each one VIP"
                    )
                vip_owner[(vip, p.proto, p.target)] = svc.name
                eps = _endpoints(svc, p, _on_network(net))
                chain = f"vip-{svc.name}-{net}-{p.proto}-{p.target}"
                if eps:
                    vips[(vip, p.proto, p.target)] = chain
                    spreads[chain] = Spread(chain, "vip", sticky, eps)
        for p in svc.ports:
            if p.published is None:
                continue
            key = (p.proto, p.published)
            if key in owner:
                raise LbInputError(
                    "ports.published",
                    f"{p.published}/{p.proto} is already published by service {owner[key]}: choose another port",
                )
            owner[key] = svc.name
            if p.mode == "ingress":
                eps = _endpoints(svc, p, _on_network(node.ingress_network))
                kind: SpreadKind = "mesh"
            else:
                eps = _endpoints(svc, p, _local_first_network(svc, node))
                kind = "host"
            if eps:
                chain = f"{kind}-{svc.name}-{p.proto}-{p.published}"
                published[key] = chain
                spreads[chain] = Spread(chain, kind, sticky, eps)
    snat = node.ingress_source if any(s.kind == "mesh" for s in spreads.values()) else None
    return LbRuleset(vips=vips, published=published, spreads=spreads, snat_to=snat)


Keep = Callable[[Backend], bool]


def _on_network(net: str | None) -> Keep:
    return lambda b: b.network == net


def _endpoints(svc: Service, p: PortSpec, keep: Keep) -> tuple[Endpoint, ...]:
    found = {Endpoint(b.address, p.proto, p.target) for b in svc.backends if keep(b)}
    return tuple(sorted(found, key=lambda e: (int(e.address), e.proto, e.port)))  # faster than dataclass order


def _local_first_network(svc: Service, node: LbNode) -> Keep:
    """mode=host: each local task once, by its address on the first of the service's networks it is on."""
    order = {n: i for i, n in enumerate(svc.networks)}
    best: dict[str, Backend] = {}
    for b in svc.backends:
        if b.node == node.name and (b.task not in best or order[b.network] < order[best[b.task].network]):
            best[b.task] = b
    chosen = set(best.values())
    return lambda b: b in chosen


# ------------------------------------------------------------------------------------------------ slots

Slots = Mapping[str, tuple[Endpoint, ...]]  # spread chain → its endpoints by slot number


def assign_slots(previous: Slots | None, rs: LbRuleset) -> dict[str, tuple[Endpoint, ...]]:
    """Slot numbers for every spread of ``rs`` that keep ``previous``'s where they can.

    A leaving endpoint's slot is taken by the spread's last one and new endpoints are appended, so a task
    joining or leaving changes at most two slots (map elements) whatever the spread's size; without a
    ``previous`` layout the endpoints are in sorted order.
    """
    out: dict[str, tuple[Endpoint, ...]] = {}
    for name, spread in rs.spreads.items():
        before = (previous or {}).get(name)
        if before is None:
            out[name] = spread.endpoints
            continue
        wanted = set(spread.endpoints)
        if len(before) == len(wanted) and wanted.issuperset(before):  # unchanged: the common case, in C
            out[name] = before
            continue
        cur = list(before)
        i = 0
        while i < len(cur):
            if cur[i] in wanted:
                i += 1
                continue
            cur[i] = cur[-1]
            cur.pop()
        present = set(cur)
        cur += [e for e in spread.endpoints if e not in present]
        out[name] = tuple(cur)
    return out
