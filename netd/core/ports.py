"""Published ports (pure): validation, conflicts and host-port allocation for ``-p``.

A mapping's host address decides where it is published:

- no ``HostIp``: every host address of each family the endpoint has (IPv4 and, dual-stack, IPv6), as Docker;
- ``0.0.0.0`` / ``::``: every host address of that family;
- a specific address: only that one (``127.0.0.1``: reachable from the host only).

Two mappings conflict when they have the same protocol and host port and their host addresses overlap in some
family (a wildcard overlaps every address of its family).  A host port 0 is replaced by the lowest free port of
the configured range.  Nothing here touches the kernel: the caller builds the endpoint only when this succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from netd.core.errors import ConflictError, InvalidError
from netd.core.model import DesiredState, Endpoint, IPAddress, PortMapping
from netd.core.strict import ascii_int

PortRange = tuple[int, int]
DEFAULT_RANGE: PortRange = (49153, 60999)

# (family, address); address None is the family's wildcard
Bind = tuple[int, IPAddress | None]


@dataclass(frozen=True)
class Holder:
    """A mapping already published by some endpoint, with words to name it in an error."""

    mapping: PortMapping
    families: frozenset[int]  # address families of its endpoint
    who: str  # 'netns "web" on network "app"'


def parse_port_range(text: str) -> PortRange:
    """``"49153-60999"`` -> (49153, 60999); a single port is a range of one."""
    first, dash, last = text.strip().partition("-")
    try:
        lo = int(first)
        hi = int(last) if dash else lo
    except ValueError:
        raise ValueError(f'"{text}" is not a port range such as "49153-60999"') from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f'"{text}": the range must be within 1-65535 and start <= end')
    return lo, hi


def describe(m: PortMapping) -> str:
    """Docker's notation: ``0.0.0.0:8080->80/tcp``, ``[::1]:8080->80/udp``, ``*:8080->80/tcp``."""
    if m.host_ip is None:
        ip = "*"
    elif m.host_ip.version == 6:
        ip = f"[{m.host_ip}]"
    else:
        ip = str(m.host_ip)
    return f"{ip}:{m.host_port}->{m.container_port}/{m.proto}"


def binds(m: PortMapping, families: Iterable[int]) -> set[Bind]:
    """Where ``m`` is published, for an endpoint with addresses of ``families``."""
    if m.host_ip is None:
        return {(f, None) for f in families}
    if m.host_ip.is_unspecified:
        return {(m.host_ip.version, None)}
    return {(m.host_ip.version, m.host_ip)}


def overlaps(a: set[Bind], b: set[Bind]) -> bool:
    return any(fa == fb and (xa is None or xb is None or xa == xb) for fa, xa in a for fb, xb in b)


def check_families(ports: list[PortMapping], families: frozenset[int], network: str) -> None:
    """A host address of a family the endpoint has no address in cannot be published."""
    for m in ports:
        if m.host_ip is not None and m.host_ip.version not in families:
            raise InvalidError(
                f"publish {describe(m)}: the endpoint has no IPv{m.host_ip.version} address on network "
                f'"{network}" (publish on an IPv{sorted(families)[0]} host address, or give the network --ipv6)',
                field="publish",
            )


def clash_filter(wanted: list[PortMapping]) -> Callable[[PortMapping], bool]:
    """Which published mappings ``plan_ports`` must see for ``wanted``: the same protocol and host port as an
    explicit one, or the same protocol as one whose host port is to be picked.  The others cannot conflict
    nor take a port the pick would want."""
    explicit = {(m.proto, m.host_port) for m in wanted if m.host_port}
    picked = {m.proto for m in wanted if not m.host_port}
    return lambda m: m.proto in picked or (m.proto, m.host_port) in explicit


def plan_ports(
    wanted: list[PortMapping],
    families: frozenset[int],
    holders: list[Holder],
    port_range: PortRange = DEFAULT_RANGE,
) -> list[PortMapping]:
    """The mappings to store for a new endpoint: conflicts refused, host port 0 replaced by a free port.

    Raises ConflictError naming the holder, or when the range has no free port left; changes nothing.
    """
    taken: list[tuple[PortMapping, set[Bind], str]] = [
        (h.mapping, binds(h.mapping, h.families), h.who) for h in holders
    ]
    out: list[PortMapping] = []
    for m in wanted:  # explicit host ports first, so an automatic pick never takes one the request names
        if m.host_port == 0:
            continue
        where = binds(m, families)
        for other, other_where, who in taken:
            if other.proto == m.proto and other.host_port == m.host_port and overlaps(where, other_where):
                raise ConflictError(
                    f"publish {describe(m)}: host port {m.host_port}/{m.proto} is already published by {who} "
                    f"({describe(other)}); choose another host port, or leave it out to let netd pick one",
                    field="publish",
                )
        taken.append((m, where, "this request"))
    for m in wanted:
        if m.host_port == 0:
            picked = m.model_copy(update={"host_port": _free_port(m, families, taken, port_range)})
            taken.append((picked, binds(picked, families), "this request"))
            out.append(picked)
        else:
            out.append(m)
    return out


def _free_port(
    m: PortMapping, families: frozenset[int], taken: list[tuple[PortMapping, set[Bind], str]], rng: PortRange
) -> int:
    where = binds(m, families)
    busy = {o.host_port for o, o_where, _ in taken if o.proto == m.proto and overlaps(where, o_where)}
    for port in range(rng[0], rng[1] + 1):
        if port not in busy:
            return port
    raise ConflictError(
        f"publish {describe(m)}: no free host port for {m.proto} left in published_port_range "
        f"{rng[0]}-{rng[1]}; give a host port, free some, or widen the range in the config",
        field="publish",
    )


# ------------------------------------------------------------------------------- what the firewall publishes


@dataclass(frozen=True)
class Published:
    """One published port in one address family: [host_ip] . proto . host_port -> addr . port."""

    version: int
    host_ip: str | None  # None: every host address of the family
    proto: str
    host_port: int
    addr: str
    port: int


def entries_of(ep: Endpoint) -> tuple[Published, ...]:
    """One endpoint's published ports, per address family it has (mapping order, then IPv4 before IPv6)."""
    out = []
    for m in ep.ports:
        for iface in (ep.ipv4, ep.ipv6):
            if iface is None or (m.host_ip is not None and m.host_ip.version != iface.version):
                continue
            host = None if m.host_ip is None or m.host_ip.is_unspecified else str(m.host_ip)
            out.append(Published(iface.version, host, m.proto, m.host_port, str(iface.ip), m.container_port))
    return tuple(out)


def published(state: DesiredState, usable: set[str]) -> dict[str, list[Published]]:
    """Published ports by network id (of the networks in ``usable``), sorted; one pass over the endpoints."""
    out: dict[str, list[Published]] = {}
    with_ports = [ep for ep in state.endpoints.values() if ep.ports and ep.network in usable]
    for ep in sorted(with_ports, key=lambda e: e.id):  # sort the few with ports, not every endpoint
        out.setdefault(ep.network, []).extend(entries_of(ep))
    return {k: v for k, v in out.items() if v}


EXPOSE_PROTOS = ("tcp", "udp", "sctp")
_MAX_EXPOSED = 1024  # a range as wide as 1-65535 would publish the whole host port range


def publish_all(exposed: Any, ports: list[PortMapping]) -> list[PortMapping]:
    """``-P``: every exposed port (Docker's ``ExposedPorts``, ``{"80/tcp": {}, "8000-8002/udp": {}}``) not already
    published by ``ports``, on a free host port; ``ports`` with them appended."""
    if not isinstance(exposed, dict):
        raise InvalidError('ExposedPorts must be an object such as {"80/tcp": {}}', field="expose")
    out = list(ports)
    have: set[tuple[int, str]] = {(m.container_port, m.proto) for m in ports}
    for spec in exposed:
        port_text, _, proto = str(spec).partition("/")
        proto = proto or "tcp"
        if proto not in EXPOSE_PROTOS:
            raise InvalidError(f"expose {spec!r}: protocol must be tcp, udp or sctp", field="expose")
        low_text, dash, high_text = port_text.partition("-")
        low = ascii_int(low_text, "expose", 1, 65535, "a port", label=f"expose {spec!r}:")
        high = ascii_int(high_text, "expose", 1, 65535, "a port", label=f"expose {spec!r}:") if dash else low
        if high < low or high - low >= _MAX_EXPOSED:
            raise InvalidError(
                f"expose {spec!r}: a range LOW-HIGH of at most {_MAX_EXPOSED} ports", field="expose"
            )
        for port in range(low, high + 1):
            if (port, proto) not in have:
                have.add((port, proto))
                out.append(PortMapping.model_validate({"host_port": 0, "container_port": port, "proto": proto}))
    return out
