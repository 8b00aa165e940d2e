"""Pure firewall rule model: what netd wants the packet filter to do, built from the desired state.

No nftables, iptables or subprocess imports here.  ``build_ruleset`` is the single builder: a backend renders
the whole ``Ruleset`` and replaces everything netd owns with it in one transaction, so adding and deleting a
network are the same operation (the network is simply present in or absent from the next ruleset).

Shape (Docker's bridge semantics; per network, never per endpoint):

``ip`` layer (routed traffic, IPv4 and IPv6; nftables ``table inet netd``)::

    forward   (base chain, hook forward, policy accept)
        oif|iif <bridge> ct status dnat accept       the ingress network and docker_gwbridge: services'
                                                     published ports DNAT there (netd.multihost.mesh), from
                                                     outside or from any netd network, and the replies
        oif vmap @to_bridge      -> jump to-<net>    every packet that leaves through a netd bridge
        iif vmap @from_bridge    -> jump from-<net>  every packet that came in on a netd bridge (and leaves
                                                     through something that is not a netd bridge)
    to-<net>
        iif <bridge> accept|drop                     same network (seen only when br_netfilter is active); icc
        iif @bridges drop                            isolation from every other netd network
        [internal]  drop                             internal: nothing else gets in
        ct state established,related accept          return traffic
        drop                                         unsolicited inbound (Docker >= 28; published ports later)
    from-<net>
        [internal]  drop                             internal: nothing gets out
        accept                                       outbound (omitted when ip_forward is False)
    postrouting (base chain, hook postrouting, nat, policy accept)
        saddr <subnet> oif != <bridge> masquerade    per subnet, when masquerade and not internal

``bridge`` layer (bridged frames; nftables ``table bridge netd``), only when some network has icc off::

    forward   (base chain, hook forward, policy accept)
        saddr <subnet> daddr <subnet> drop           per subnet of each icc=False network

The bridge layer makes icc=False work without br_netfilter.  Its rules match on addresses only: this kernel
has no ``meta ibrname`` (CONFIG_NFT_BRIDGE_META is off), and netd's IPAM keeps netd subnets disjoint.

Published ports (``-p``), only while some endpoint publishes one; one map element per mapping, never a rule::

    prerouting (base chain, hook prerouting, nat)    fib daddr type local  jump published
    output     (base chain, hook output, nat)        fib daddr type local  jump published   (the host itself)
    published
        dnat ip  to @dnat4     [daddr . l4proto . dport]   -> container address . port   (a given host IP)
        dnat ip  to @dnat4_any [l4proto . dport]           -> container address . port   (every host IPv4)
        dnat ip6 to @dnat6 / @dnat6_any                      the same for IPv6
    to-<net>   ... ct status dnat accept                 before the final drop (networks with published ports)
    postrouting
        saddr 127.0.0.0/8 oif <bridge> masquerade        127.0.0.1:port from the host (route_localnet on)
        ct status dnat saddr <subnet> oif <bridge> masquerade   hairpin: an endpoint through the host address

Nothing here is per endpoint.
"""

from __future__ import annotations

import hashlib
import re
from ipaddress import ip_network

from netd.core.epindex import EndpointIndex
from netd.core.errors import InvalidError
from netd.core.links import link_pairs
from netd.core.model import DesiredState, Network
from netd.core.ruleset import (
    CHAIN_FORWARD,
    CHAIN_OUTPUT,
    CHAIN_POSTROUTING,
    CHAIN_PREROUTING,
    CHAIN_PUBLISHED,
    DNAT_MAPS,
    LOOPBACK4,
    MAP_FROM_BRIDGE,
    MAP_TO_BRIDGE,
    SET_BRIDGES,
    Accept,
    Chain,
    Dispatch,
    DnatMap,
    Drop,
    Element,
    IPNet,
    Jump,
    Masquerade,
    Match,
    NamedSet,
    Rule,
    Ruleset,
    Table,
)
from netd.drivers import get_driver
from netd.firewall.portmaps import PortMaps

_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,15}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9]+$")
GWBRIDGE = "docker_gwbridge"  # netd.multihost's way out of overlay endpoints (mode=host ports DNAT to it)
KEY_LEN = 12  # keeps "NETD-FROM-<key>" within iptables' 28-character chain-name limit


# ---------------------------------------------------------------------------------------------------- builder


def build_ruleset(
    state: DesiredState,
    *,
    ip_forward: bool = True,
    ports: PortMaps | None = None,
    index: EndpointIndex | None = None,
) -> Ruleset:
    """Build the complete ruleset for ``state``: deterministic (sorted by network id).

    ``ip_forward=False`` (Docker's ``ip-forward: false``): netd does not accept outbound forwarded traffic or
    its replies (the host's own policy decides); isolation, icc and internal drops and NAT stay.  ``ports``:
    the published-port maps of the previous build (the reconciler keeps one), updated by what changed since;
    the result is the same as with a fresh one.  ``index``: the endpoint index of ``state`` (names the
    endpoints changed since ``ports`` last caught up).
    """
    features = {n.id: get_driver(n).features(n) for n in state.networks.values()}
    # a network that is not routed (overlay: its endpoints leave through docker_gwbridge, never through the
    # overlay's gateway) gets the rules of an internal one: nothing forwarded between it and anything else
    nets = sorted(
        (
            n if features[n.id].routed else n.model_copy(update={"internal": True})
            for n in state.networks.values()
            if features[n.id].filtered
        ),
        key=lambda n: n.id,
    )
    if not nets:
        return Ruleset()
    _check_unique_bridges(nets)
    keys = chain_keys(nets)
    pub = ports or PortMaps()
    pub.update(state, (n.id for n in nets if not n.internal and features[n.id].published_ports), index)

    to_elems: list[Element] = []
    from_elems: list[Element] = []
    chains: list[Chain] = []
    nat: list[Rule] = []
    bridge_rules: list[Rule] = []
    for net in nets:
        key = keys[net.id]
        to_elems.append(Element((net.bridge,), Jump(f"to-{key}")))
        from_elems.append(Element((net.bridge,), Jump(f"from-{key}")))
        linked = _linked(state, net)
        chains.append(Chain(f"to-{key}", _to_rules(net, ip_forward, pub.publishes(net.id), linked)))
        chains.append(Chain(f"from-{key}", _from_rules(net, ip_forward)))
        if features[net.id].nat:
            nat.extend(_nat_rules(net))
        nat.extend(_port_nat_rules(net, pub))
        bridge_rules.extend(_bridge_rules(net, linked))

    # services' published ports (netd.multihost.mesh) DNAT into the ingress network and docker_gwbridge, from
    # outside or from any netd network: those connections and their replies pass, before any isolation
    mesh: list[Rule] = []
    for n in nets if ip_forward else []:
        if _mesh_target(n):
            mesh += [Rule(Match(oif=n.bridge, ct_dnat=True), Accept(), "netd:routing-mesh")]
            mesh += [Rule(Match(iif=n.bridge, ct_dnat=True), Accept(), "netd:routing-mesh")]
    forward = Chain(
        CHAIN_FORWARD,
        (
            *mesh,
            Rule(Match(), Dispatch("oif", MAP_TO_BRIDGE), "netd:into-network"),
            Rule(Match(), Dispatch("iif", MAP_FROM_BRIDGE), "netd:out-of-network"),
        ),
        hook="forward",
    )
    sets: tuple[NamedSet, ...] = (
        NamedSet(SET_BRIDGES, ("ifname",), tuple(Element((n.bridge,)) for n in nets)),
        NamedSet(MAP_TO_BRIDGE, ("ifname",), tuple(to_elems), value="verdict"),
        NamedSet(MAP_FROM_BRIDGE, ("ifname",), tuple(from_elems), value="verdict"),
    )
    pub_chains: tuple[Chain, ...] = ()
    if pub.any:
        pub_chains = _published_chains()
        sets += pub.named_sets()
    ip = Table(
        chains=(forward, Chain(CHAIN_POSTROUTING, tuple(nat), hook="postrouting"), *pub_chains, *chains),
        sets=sets,
    )
    bridge = Table()
    if bridge_rules:
        bridge = Table(chains=(Chain(CHAIN_FORWARD, tuple(bridge_rules), hook="forward"),))
    return Ruleset(ip=ip, bridge=bridge)


def _subnets(net: Network) -> list[IPNet]:
    return [cfg.subnet for cfg in net.ipam]


def _linked(state: DesiredState, net: Network) -> list[tuple[IPNet, IPNet]]:
    """(source, destination) host prefixes a --link allows both ways when icc is off (Docker's legacy links)."""
    if net.icc or not net.is_default:
        return []
    out: list[tuple[IPNet, IPNet]] = []
    for pair in link_pairs(state, net):
        for a in (pair.recipient.ipv4, pair.recipient.ipv6):
            for b in (pair.source.ipv4, pair.source.ipv6):
                if a is not None and b is not None and a.version == b.version:
                    ha, hb = ip_network(a.ip), ip_network(b.ip)
                    out += [(ha, hb), (hb, ha)]
    return list(dict.fromkeys(out))


def _mesh_target(net: Network) -> bool:
    """Where services' published ports DNAT to (netd.multihost.mesh): the ingress network (the routing mesh),
    and docker_gwbridge (``mode=host``: the local task's address there)."""
    return net.ingress or (net.name == GWBRIDGE and net.driver == "bridge")


def _to_rules(
    net: Network, ip_forward: bool, publishes: bool = False, linked: list[tuple[IPNet, IPNet]] | None = None
) -> tuple[Rule, ...]:
    c = f"netd:{net.id}"
    rules = [Rule(Match(iif=net.bridge, saddr=s, daddr=d), Accept(), c) for s, d in linked or []]
    rules += [
        Rule(Match(iif=net.bridge), Accept() if net.icc else Drop(), c),
        Rule(Match(iif_in=SET_BRIDGES), Drop(), c),
    ]
    if not net.internal and ip_forward:
        rules.append(Rule(Match(ct_state=frozenset({"established", "related"})), Accept(), c))
        # routed IPv6 (gateway_mode_ipv6=routed): the subnet is reachable from outside, as its addresses are
        rules.extend(Rule(Match(daddr=s), Accept(), c) for s in _routed_subnets(net))
        if publishes:  # a published port: the published chain DNAT'd it to an endpoint of this network
            rules.append(Rule(Match(ct_dnat=True), Accept(), c))
    rules.append(Rule(Match(), Drop(), c))
    return tuple(rules)


def _from_rules(net: Network, ip_forward: bool) -> tuple[Rule, ...]:
    c = f"netd:{net.id}"
    if net.internal:
        return (Rule(Match(), Drop(), c),)
    return (Rule(Match(), Accept(), c),) if ip_forward else ()


def _routed_subnets(net: Network) -> list[IPNet]:
    return [s for s in _subnets(net) if s.version == 6 and net.gateway_mode_ipv6 == "routed"]


def _nat_rules(net: Network) -> list[Rule]:
    if net.internal or not net.masquerade:
        return []
    routed = _routed_subnets(net)
    return [
        Rule(Match(saddr=s, oif_not=net.bridge), Masquerade(), f"netd:{net.id}")
        for s in _subnets(net)
        if s not in routed
    ]


def _bridge_rules(net: Network, linked: list[tuple[IPNet, IPNet]]) -> list[Rule]:
    if net.icc:
        return []
    c = f"netd:{net.id}"
    accepts = [Rule(Match(saddr=s, daddr=d), Accept(), c) for s, d in linked]
    return accepts + [Rule(Match(saddr=s, daddr=s), Drop(), c) for s in _subnets(net)]


def _check_unique_bridges(nets: list[Network]) -> None:
    seen: dict[str, str] = {}
    for net in nets:
        if not _IFNAME_RE.match(net.bridge):
            raise InvalidError(
                f'network "{net.name}": bridge name {net.bridge!r} is not a valid interface name '
                "(1-15 characters: letters, digits, '_', '.', '@', '+', '-')",
                field="bridge",
            )
        if net.bridge in seen:
            raise InvalidError(
                f'network "{net.name}": bridge {net.bridge} is already used by network "{seen[net.bridge]}"; '
                "give each network its own bridge",
                field="bridge",
            )
        seen[net.bridge] = net.name


def chain_keys(nets: list[Network]) -> dict[str, str]:
    """A short, safe, unique chain key per network id: the id prefix when that works, else a hash."""
    prefixes = [n.id[:KEY_LEN] for n in nets]
    out: dict[str, str] = {}
    for net, prefix in zip(nets, prefixes, strict=True):
        if _KEY_RE.match(prefix) and prefixes.count(prefix) == 1:
            out[net.id] = prefix
        else:
            out[net.id] = "h" + hashlib.sha256(net.id.encode()).hexdigest()[: KEY_LEN - 1]
    return out


# ---------------------------------------------------------------------------------------------------- published


def _published_chains() -> tuple[Chain, ...]:
    c = "netd:published-ports"
    jump = (Rule(Match(fib_local=True), Jump(CHAIN_PUBLISHED), c),)
    dnat = tuple(
        Rule(Match(), DnatMap(DNAT_MAPS[(v, by_daddr)], "ip" if v == 4 else "ip6", by_daddr), c)
        for v in (4, 6)
        for by_daddr in (True, False)
    )
    return (
        Chain(CHAIN_PREROUTING, jump, hook="prerouting"),
        Chain(CHAIN_OUTPUT, jump, hook="output"),
        Chain(CHAIN_PUBLISHED, dnat),
    )


def _port_nat_rules(net: Network, pub: PortMaps) -> list[Rule]:
    """Masquerade what published ports need: 127.0.0.1 from the host, and hairpin through the host address."""
    if not pub.publishes(net.id):
        return []
    c = f"netd:{net.id}"
    rules = []
    if pub.publishes_v4(net.id):
        rules.append(Rule(Match(saddr=LOOPBACK4, oif=net.bridge), Masquerade(), c))
    rules.extend(Rule(Match(ct_dnat=True, saddr=s, oif=net.bridge), Masquerade(), c) for s in _subnets(net))
    return rules


def udp_changes(old: Ruleset | None, new: Ruleset) -> list[tuple[int, str | None, int]]:
    """UDP host ports whose mapping appeared, went or now points elsewhere: their conntrack entries must go.
    Per map, only the elements that differ are looked at (none when the map is the same object)."""
    before = {s.name: s.elements for s in old.ip.sets} if old is not None else {}
    after = {s.name: s.elements for s in new.ip.sets}
    out: set[tuple[int, str | None, int]] = set()
    for (version, by_daddr), name in DNAT_MAPS.items():
        a, b = before.get(name, ()), after.get(name, ())
        if a is b or a == b:
            continue
        for e in set(a).symmetric_difference(b):
            host, (proto, port) = (e.key[0], e.key[1:]) if by_daddr else (None, e.key)
            if proto == "udp":
                out.add((version, host, int(port)))
    return sorted(out, key=str)
