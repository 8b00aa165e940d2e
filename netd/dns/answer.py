"""What the per-network resolver answers (pure: no sockets, no kernel imports).

Each user-defined bridge network gets a resolver on its gateway address(es).  The index below maps a resolver
address to what that network may see: its endpoints' names (the netd netns name; a ``--netns-path`` endpoint has
only its aliases), their ``--alias`` names, and reverse (PTR) names for its subnets.  A query arriving on one
network's gateway never sees another network's names.  The default bridge has no resolver, as in Docker.

``answer`` returns a complete response for what the network knows, or ``None``: "forward it upstream".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address

from netd.core.model import DesiredState, Endpoint, IPAddress, IPInterface, IPNetwork, Network
from netd.drivers import get_driver

TYPE_CHECKING = False
if TYPE_CHECKING:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.opcode
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype
    import dns.reversename
    import dns.rrset
else:
    from netd.dns.lazy import dns

# names of endpoints the state does not hold (overlay endpoints on other nodes, from the cluster cache):
# network -> (names, IPv4, IPv6) per endpoint
RemoteNames = Callable[[Network], Iterable[tuple[list[str], IPInterface | None, IPInterface | None]]]

TTL = 60  # short: a name moves when its endpoint reconnects; nobody should cache it for long


def has_resolver(net: Network) -> bool:
    """User-defined bridge networks get name resolution; the default bridge does not (Docker's rule)."""
    return get_driver(net).features(net).dns


def resolver_addresses(net: Network) -> list[IPAddress]:
    """The gateway addresses the network's resolver listens on (IPv4 first)."""
    if not has_resolver(net):
        return []
    out: list[IPAddress] = []
    for version in (4, 6):
        pool = net.pool(version)
        if pool is not None and pool.gateway is not None:
            out.append(pool.gateway)
    return out


def resolver_address(net: Network) -> IPAddress | None:
    """The one address to put in resolv.conf / show in the API (IPv4 gateway when there is one)."""
    addrs = resolver_addresses(net)
    return addrs[0] if addrs else None


def endpoint_names(ep: Endpoint) -> list[str]:
    """The names an endpoint answers to on its network, primary name first."""
    names = [ep.netns.lower()] if ep.netns is not None else []
    names += [a.lower().rstrip(".") for a in ep.aliases if a.lower().rstrip(".") not in names]
    return names


@dataclass
class NetIndex:
    """What one network's resolver knows."""

    network: str  # name, for logs
    subnets: tuple[IPNetwork, ...]
    forward: bool  # internal networks never reach the outside, not even through DNS
    names: dict[str, tuple[list[IPv4Address], list[IPv6Address]]] = field(default_factory=dict)
    ptr: dict[IPAddress, str] = field(default_factory=dict)

    def allows(self, peer: IPAddress) -> bool:
        """Only the network's own endpoints may ask (no open resolver for other networks or the uplink)."""
        return any(peer.version == s.version and peer in s for s in self.subnets)

    def in_subnets(self, addr: IPAddress) -> bool:
        return self.allows(addr)


def _add(idx: NetIndex, names: list[str], ipv4: IPInterface | None, ipv6: IPInterface | None) -> None:
    for name in names:
        v4, v6 = idx.names.setdefault(name, ([], []))
        if isinstance(ipv4, IPv4Interface):
            v4.append(ipv4.ip)
        if isinstance(ipv6, IPv6Interface):
            v6.append(ipv6.ip)
    if names:
        for iface in (ipv4, ipv6):
            if iface is not None:  # the first name given for an address keeps its PTR (an endpoint's own
                idx.ptr.setdefault(iface.ip, names[0])  # name, before the names of services it is a task of)


def build_network_index(net: Network, state: DesiredState, remote: RemoteNames | None = None) -> NetIndex:
    idx = NetIndex(network=net.name, subnets=tuple(c.subnet for c in net.ipam), forward=not net.internal)
    for ep in state.endpoints_of(net.id):
        _add(idx, endpoint_names(ep), ep.ipv4, ep.ipv6)
    if remote is not None:
        for names, v4, v6 in remote(net):
            _add(idx, [n.lower().rstrip(".") for n in names], v4, v6)
    return idx


def _served(state: DesiredState) -> list[Network]:
    """Networks whose resolver runs here: a network whose host links exist only while this node has endpoints
    on it (overlay) has no gateway address here otherwise."""
    local = [n.id for n in state.networks.values() if get_driver(n).features(n).local_links_only]
    # only then: a pass over every endpoint (a connect's DNS hook cost grew with N for it)
    with_endpoints = {ep.network for ep in state.endpoints.values()} if local else set()
    return [n for n in state.networks.values() if n.id not in local or n.id in with_endpoints]


def build_index(state: DesiredState, remote: RemoteNames | None = None) -> dict[IPAddress, NetIndex]:
    """Resolver address -> the index of the network it serves."""
    out: dict[IPAddress, NetIndex] = {}
    for net in _served(state):
        addrs = resolver_addresses(net)
        if addrs:
            idx = build_network_index(net, state, remote)
            for a in addrs:
                out[a] = idx
    return out


def listen_addresses(state: DesiredState) -> dict[IPAddress, str]:
    """Resolver address -> network name, for every network that gets a resolver."""
    return {a: net.name for net in _served(state) for a in resolver_addresses(net)}


# ---------------------------------------------------------------------------------------------------- answers


def reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    r = dns.message.make_response(query, recursion_available=True)
    r.set_rcode(rcode)
    return r


def _rotated(items: list[IPv4Address] | list[IPv6Address], turn: int) -> list[str]:
    if not items:
        return []
    k = turn % len(items)
    return [str(a) for a in items[k:] + items[:k]]


def rotations(query: dns.message.Message, idx: NetIndex) -> int:
    """How many different orders ``answer`` gives for ``query`` as ``turn`` goes on (1: always the same)."""
    if len(query.question) != 1:
        return 1
    known = idx.names.get(query.question[0].name.to_text(omit_final_dot=True).lower())
    return max(1, len(known[0]), len(known[1])) if known is not None else 1


def answer(query: dns.message.Message, idx: NetIndex, turn: int = 0) -> dns.message.Message | None:
    """The response to ``query`` from what the network knows, or None when it must be forwarded upstream.

    ``turn`` rotates the order of several addresses for one name (round-robin between endpoints sharing an
    alias).
    """
    if query.opcode() != dns.opcode.QUERY:
        return reply(query, dns.rcode.NOTIMP)
    if len(query.question) != 1:
        return reply(query, dns.rcode.FORMERR)
    q = query.question[0]
    if q.rdclass != dns.rdataclass.IN:
        return None
    name = q.name.to_text(omit_final_dot=True).lower()
    known = idx.names.get(name)
    if known is not None:
        r = reply(query, dns.rcode.NOERROR)
        r.flags |= dns.flags.AA
        v4, v6 = known
        want = {
            dns.rdatatype.A: _rotated(v4, turn),
            dns.rdatatype.AAAA: _rotated(v6, turn),
        }
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            if q.rdtype in (rdtype, dns.rdatatype.ANY) and want[rdtype]:
                r.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", rdtype, want[rdtype]))
        return r  # a known name with no record of that type: NOERROR, no data
    if q.rdtype == dns.rdatatype.PTR:
        return _ptr(query, q.name, idx)
    if len(q.name.labels) <= 2 and q.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        # a single-label name ("peer.") no endpoint of this network has: never leak it upstream (another
        # network's names, typos); like systemd-resolved's ResolveUnicastSingleLabel=no
        return reply(query, dns.rcode.NXDOMAIN)
    return None


def _ptr(query: dns.message.Message, qname: dns.name.Name, idx: NetIndex) -> dns.message.Message | None:
    try:
        addr = ip_address(dns.reversename.to_address(qname))
    except (dns.exception.SyntaxError, ValueError):
        return None  # a partial reverse zone (e.g. 0.30.172.in-addr.arpa): the upstream's business
    if not idx.in_subnets(addr):
        return None
    target = idx.ptr.get(addr)
    if target is None:
        return reply(query, dns.rcode.NXDOMAIN)  # our subnet: nobody upstream knows it better
    r = reply(query, dns.rcode.NOERROR)
    r.flags |= dns.flags.AA
    r.answer.append(dns.rrset.from_text_list(qname, TTL, "IN", dns.rdatatype.PTR, [target + "."]))
    return r
