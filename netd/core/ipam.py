"""Address management (pure).

What is taken is derived from the desired state (gateways, aux-addresses, endpoints), so an allocation is
released exactly when the endpoint holding it goes away.  The one thing kept is ``AddressBook``: a cache of
that derivation per network (held addresses, where the next scan starts), kept in step with the desired state
by the service so that a connect costs O(1).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_interface, ip_network

from netd.core.errors import ConflictError, InvalidError
from netd.core.model import DesiredState, Endpoint, IPAddress, IpamConfig, IPNetwork

MAX_PREFIX = {4: 30, 6: 126}
# an address, optionally with a prefix length: ASCII hex digits, ':' and '.' only (no %zone, no netmask form)
_ADDR_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?")
# ranges no network may use: the kernel or every host treats them specially (RFC 6890 special purpose)
UNUSABLE: tuple[tuple[IPNetwork, str], ...] = (
    (IPv4Network("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
    (IPv4Network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (IPv4Network("169.254.0.0/16"), "link-local (169.254.0.0/16)"),
    (IPv4Network("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (IPv4Network("240.0.0.0/4"), "reserved (240.0.0.0/4, with the broadcast address)"),
    (IPv6Network("::/127"), "the unspecified or loopback address (::/127)"),
    (IPv6Network("::ffff:0:0/96"), "IPv4-mapped (::ffff:0:0/96)"),
    (IPv6Network("fe80::/10"), "link-local (fe80::/10)"),
    (IPv6Network("fec0::/10"), "deprecated site-local (fec0::/10)"),
    (IPv6Network("ff00::/8"), "multicast (ff00::/8)"),
)


def _check_text(value: str, field: str, what: str) -> None:
    if not _ADDR_TEXT.fullmatch(value):
        raise InvalidError(
            f"{field} {value!r} is not a valid {what}: write it as digits, '.'/':' and an optional /PREFIX, "
            "without spaces or a %zone",
            field=field,
        )


def parse_network(value: str, field: str) -> IPNetwork:
    _check_text(value, field, "CIDR")
    if "/" not in value:
        raise InvalidError(f"{field} {value!r} is not a valid CIDR: add the prefix length, e.g. /24", field=field)
    try:
        return ip_network(value, strict=True)
    except ValueError as e:
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f" (did you mean {ip_network(value, strict=False)}?)"
        raise InvalidError(f"{field} {value!r} is not a valid CIDR: {e}{hint}", field=field) from e


def parse_address(value: str, field: str) -> IPAddress:
    """An address, as Docker takes it; a ``/PREFIX`` suffix is allowed but must be a valid prefix length."""
    _check_text(value, field, "IP address")
    try:
        if "/" in value:
            return ip_interface(value).ip
        return ip_address(value)
    except ValueError as e:
        raise InvalidError(f"{field} {value!r} is not a valid IP address: {e}", field=field) from e


def check_usable(net: IPNetwork, field: str) -> None:
    """Refuse subnets in (or around) special-purpose ranges: loopback, multicast, link-local, reserved."""
    for special, what in UNUSABLE:
        if special.version == net.version and net.overlaps(special):
            raise InvalidError(
                f"{field} {net} overlaps {what}, which cannot be a network's subnet; use a private range "
                "such as 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or fd00::/8",
                field=field,
            )


def first_host(subnet: IPNetwork) -> IPAddress:
    return subnet.network_address + 1


def validate_pool(
    subnet: str,
    gateway: str | None = None,
    ip_range: str | None = None,
    aux_addresses: Mapping[str, str] | None = None,
) -> IpamConfig:
    """Check one IPAM.Config entry; the gateway defaults to the subnet's first address."""
    net = parse_network(subnet, "subnet")
    check_usable(net, "subnet")
    if net.prefixlen > MAX_PREFIX[net.version]:
        raise InvalidError(
            f"subnet {net} is too small: use a prefix of /{MAX_PREFIX[net.version]} or shorter", field="subnet"
        )
    gw = parse_address(gateway, "gateway") if gateway else first_host(net)
    _check_inside(gw, net, "gateway")
    if net.version == 4 and gw in (net.network_address, net.broadcast_address):
        raise InvalidError(f"gateway {gw} is the network or broadcast address of {net}", field="gateway")
    rng: IPNetwork | None = None
    if ip_range:
        rng = parse_network(ip_range, "ip-range")
        if rng.version != net.version or not _subnet_of(rng, net):
            raise InvalidError(f"ip-range {rng} is not inside subnet {net}", field="ip-range")
    aux: dict[str, IPAddress] = {}
    for name, value in (aux_addresses or {}).items():
        if not name:
            raise InvalidError("aux-address needs a name: use --aux-address name=IP", field="aux-address")
        addr = parse_address(value, f"aux-address {name}")
        _check_inside(addr, net, f"aux-address {name}")
        if addr == gw or addr in aux.values():
            raise InvalidError(f"aux-address {name}={addr} is already reserved", field="aux-address")
        aux[name] = addr
    return IpamConfig(subnet=net, gateway=gw, ip_range=rng, aux_addresses=aux)


def _subnet_of(inner: IPNetwork, outer: IPNetwork) -> bool:
    if isinstance(inner, IPv4Network) and isinstance(outer, IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, IPv6Network) and isinstance(outer, IPv6Network):
        return inner.subnet_of(outer)
    return False


def _check_inside(addr: IPAddress, net: IPNetwork, field: str) -> None:
    if addr.version != net.version or addr not in net:
        raise InvalidError(f"{field} {addr} is outside subnet {net}", field=field)


def reserved(cfg: IpamConfig) -> set[IPAddress]:
    """Addresses never handed to an endpoint: network, broadcast, gateway, aux-addresses."""
    out: set[IPAddress] = {cfg.subnet.network_address, *cfg.aux_addresses.values()}
    if cfg.gateway is not None:
        out.add(cfg.gateway)
    if cfg.subnet.version == 4:
        out.add(cfg.subnet.broadcast_address)
    return out


def allocate(
    cfg: IpamConfig,
    taken: set[IPAddress],
    requested: IPAddress | None = None,
    *,
    network: str,
    start: IPAddress | None = None,
) -> IPAddress:
    """Return a free address: the requested one (checked) or the first free one in the ip-range (or subnet).

    ``start``: every address of the pool below it is known to be taken or reserved, so the scan begins there
    (and wraps around if the hint was wrong); a caller that keeps it makes the common case O(1) at any size."""
    blocked = reserved(cfg)  # small; ``taken`` can be large and is not copied
    if requested is not None:
        field = "ip" if requested.version == 4 else "ip6"
        _check_inside(requested, cfg.subnet, field)
        if requested in blocked:
            raise ConflictError(
                f"network {network!r}: {requested} is reserved (gateway, aux-address or network address); "
                "pick another address",
                field=field,
            )
        if requested in taken:
            raise ConflictError(
                f"network {network!r}: {requested} is already in use; pick another address or omit --ip",
                field=field,
            )
        return requested
    pool = cfg.ip_range or cfg.subnet
    for addr in _hosts(pool, start):
        if addr not in blocked and addr not in taken:
            return addr
    where = f"ip-range {cfg.ip_range}" if cfg.ip_range else f"subnet {cfg.subnet}"
    raise ConflictError(
        f"network {network!r}: no free address left in {where}; disconnect endpoints or use a larger subnet",
        field="ip",
    )


def _hosts(net: IPNetwork, start: IPAddress | None = None) -> Iterable[IPAddress]:
    """Every address of ``net`` from ``start`` (if inside it) to the end, then from the beginning."""
    first = int(net.network_address)
    end = int(net.broadcast_address)
    begin = int(start) if start is not None and start.version == net.version and start in net else first
    make = IPv4Address if net.version == 4 else IPv6Address
    for i in itertools.chain(range(begin, end + 1), range(first, begin)):
        yield make(i)


def choose_subnet(pools: Iterable[tuple[IPv4Network, int]], used: Iterable[IPNetwork]) -> IPv4Network:
    """The first pool subnet that overlaps nothing in ``used`` (other networks, host routes and addresses)."""
    used4 = [u for u in used if isinstance(u, IPv4Network)]
    for base, size in pools:
        for candidate in base.subnets(new_prefix=size):
            if not any(candidate.overlaps(u) for u in used4):
                return candidate
    raise ConflictError(
        "no free subnet left in the address pools; pass --subnet or add default-address-pools to the config",
        field="subnet",
    )


def ula_prefix(machine_id: str) -> IPv6Network:
    """A per-host /48 in fd00::/8 derived stably from the machine id (RFC 4193 style: 40 pseudo-random bits)."""
    digest = hashlib.sha256(b"netd-ula:" + machine_id.strip().encode()).digest()
    global_id = int.from_bytes(digest[:5], "big")
    return IPv6Network(((0xFD << 120) | (global_id << 80), 48))


def choose_subnet_v6(prefix: IPv6Network, used: Iterable[IPNetwork]) -> IPv6Network:
    """The first /64 of the host's ULA /48 that overlaps nothing in ``used``."""
    used6 = [u for u in used if isinstance(u, IPv6Network)]
    for candidate in prefix.subnets(new_prefix=64):
        if not any(candidate.overlaps(u) for u in used6):
            return candidate
    raise ConflictError(f"no free /64 left in {prefix}; pass an IPv6 --subnet", field="subnet")


def overlapping(subnet: IPNetwork, others: Mapping[str, Iterable[IPNetwork]]) -> tuple[str, IPNetwork] | None:
    """The first (owner, subnet) in ``others`` that overlaps ``subnet``."""
    for owner, nets in others.items():
        for other in nets:
            if other.version == subnet.version and subnet.overlaps(other):
                return owner, other
    return None


class AddressBook:
    """Per network, the addresses its endpoints hold and where the next scan starts, kept in step with the
    desired state so that a connect costs O(1) at any size (a scan of every endpoint per connect did not).

    Built lazily from the state; :meth:`changed` must see every change of the endpoints (the service calls it
    from its one place that swaps the state).  The scan start is a hint below which the pool is full: an
    endpoint that goes lowers it, so the address handed out is still the first free one."""

    def __init__(self) -> None:
        self._taken: dict[str, set[IPAddress]] = {}  # network id -> held addresses
        self._start: dict[tuple[str, int], IPAddress] = {}  # (network id, IP version) -> scan start
        # (network id, IP version) -> (the address a scan picked, the start after it), until it is committed
        self._picked: dict[tuple[str, int], tuple[IPAddress, IPAddress | None]] = {}

    def taken(self, state: DesiredState, net_id: str) -> set[IPAddress]:
        held = self._taken.get(net_id)
        if held is None:
            held = self._taken[net_id] = {a for ep in state.endpoints_of(net_id) for a in _addresses(ep)}
        return held

    def start(self, net_id: str, version: int) -> IPAddress | None:
        return self._start.get((net_id, version))

    def picked(self, net_id: str, pool: IpamConfig, addr: IPAddress) -> None:
        """``addr`` was picked by a scan: once an endpoint holds it (:meth:`changed`), the next scan starts
        after it (everything between the scan's start and ``addr`` was taken or reserved)."""
        after = addr + 1 if int(addr) < int(pool.subnet.broadcast_address) else None
        self._picked[(net_id, addr.version)] = (addr, after)

    def changed(self, before: DesiredState, after: DesiredState, endpoint_ids: Iterable[str] | None) -> None:
        """The endpoints ``endpoint_ids`` (None: any) may differ between ``before`` and ``after``."""
        if endpoint_ids is None:
            self._taken.clear()
            self._start.clear()
            self._picked.clear()
            return
        for ep_id in endpoint_ids:
            old, new = before.endpoints.get(ep_id), after.endpoints.get(ep_id)
            if old is new:
                continue
            kept = set(_addresses(new)) if new is not None else set()
            if old is not None:
                for addr in _addresses(old):
                    if addr in kept:
                        continue
                    self._taken.get(old.network, set()).discard(addr)
                    start = self._start.get((old.network, addr.version))
                    if start is not None and int(addr) < int(start):
                        self._start[(old.network, addr.version)] = addr
            if new is None:
                continue
            if new.network in self._taken:
                self._taken[new.network].update(kept)
            for addr in kept:
                key = (new.network, addr.version)
                pick = self._picked.get(key)
                if pick is not None and pick[0] == addr:
                    del self._picked[key]
                    if pick[1] is not None:
                        self._start[key] = pick[1]


def _addresses(ep: Endpoint) -> list[IPAddress]:
    return [iface.ip for iface in (ep.ipv4, ep.ipv6) if iface is not None]
