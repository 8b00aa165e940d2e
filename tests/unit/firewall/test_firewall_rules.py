"""Unit tests of the pure rule builder (no root)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from fw_states import net, representative, state

from netd.core.errors import InvalidError
from netd.core.ruleset import (
    MAP_FROM_BRIDGE,
    MAP_TO_BRIDGE,
    SET_BRIDGES,
    Accept,
    Dispatch,
    Drop,
    Element,
    Jump,
    Masquerade,
    Match,
    Rule,
    Ruleset,
)
from netd.firewall.rules import build_ruleset, chain_keys


def verdicts(rules: tuple[Rule, ...]) -> list[tuple[Match, object]]:
    return [(r.match, r.verdict) for r in rules]


def test_no_networks_is_empty() -> None:
    rs = build_ruleset(state())
    assert rs == Ruleset()
    assert rs.empty


def test_forward_dispatches_through_maps() -> None:
    rs = build_ruleset(representative())
    fwd = rs.ip.chain("forward")
    assert fwd.hook == "forward"
    assert [r.verdict for r in fwd.rules] == [Dispatch("oif", MAP_TO_BRIDGE), Dispatch("iif", MAP_FROM_BRIDGE)]
    maps = {s.name: s for s in rs.ip.sets}
    assert maps[SET_BRIDGES].elements == tuple(Element((b,)) for b in ("br-a", "br-b", "br-i", "br-n"))
    assert Element(("br-a",), Jump("to-a1b2c3d4e5f6")) in maps[MAP_TO_BRIDGE].elements
    assert Element(("br-i",), Jump("from-c3d4e5f6a7b8")) in maps[MAP_FROM_BRIDGE].elements


def test_isolation_every_pair_is_dropped() -> None:
    """Into every network: a packet from any netd bridge other than its own is dropped before anything."""
    rs = build_ruleset(representative())
    for key in ("a1b2c3d4e5f6", "b2c3d4e5f6a7", "c3d4e5f6a7b8", "d4e5f6a7b8c9"):
        rules = rs.ip.chain(f"to-{key}").rules
        # rule 0 decides own-bridge traffic, rule 1 drops everything from the other netd bridges
        assert rules[1].match == Match(iif_in=SET_BRIDGES)
        assert rules[1].verdict == Drop()
        assert rules[0].match.iif is not None


def test_plain_network_outbound_and_return() -> None:
    rs = build_ruleset(state(net("n1", "br1", "10.1.0.0/24")))
    assert verdicts(rs.ip.chain("to-n1").rules) == [
        (Match(iif="br1"), Accept()),
        (Match(iif_in=SET_BRIDGES), Drop()),
        (Match(ct_state=frozenset({"established", "related"})), Accept()),
        (Match(), Drop()),
    ]
    assert verdicts(rs.ip.chain("from-n1").rules) == [(Match(), Accept())]
    assert verdicts(rs.ip.chain("postrouting").rules) == [
        (Match(saddr=ip_network("10.1.0.0/24"), oif_not="br1"), Masquerade())
    ]
    assert rs.bridge.empty  # icc on: no bridge-layer rules
    assert all(r.comment == "netd:n1" for r in rs.ip.chain("to-n1").rules)


def test_internal_network() -> None:
    rs = build_ruleset(state(net("n1", "br1", "10.1.0.0/24", internal=True)))
    assert verdicts(rs.ip.chain("to-n1").rules) == [
        (Match(iif="br1"), Accept()),
        (Match(iif_in=SET_BRIDGES), Drop()),
        (Match(), Drop()),
    ]
    assert verdicts(rs.ip.chain("from-n1").rules) == [(Match(), Drop())]
    assert rs.ip.chain("postrouting").rules == ()  # internal: never NATed


def test_icc_off() -> None:
    rs = build_ruleset(state(net("n1", "br1", "10.1.0.0/24", "fd00:1::/64", icc=False)))
    assert rs.ip.chain("to-n1").rules[0].match == Match(iif="br1")
    assert rs.ip.chain("to-n1").rules[0].verdict == Drop()  # br_netfilter path
    fwd = rs.bridge.chain("forward")
    assert fwd.hook == "forward"
    v4, v6 = ip_network("10.1.0.0/24"), ip_network("fd00:1::/64")
    assert verdicts(fwd.rules) == [(Match(saddr=v4, daddr=v4), Drop()), (Match(saddr=v6, daddr=v6), Drop())]
    assert fwd.rules[1].match.family == "ip6"


def test_icc_off_internal_keeps_drop() -> None:
    rs = build_ruleset(state(net("n1", "br1", "10.1.0.0/24", internal=True, icc=False)))
    assert rs.ip.chain("to-n1").rules[0].verdict == Drop()
    assert len(rs.bridge.chain("forward").rules) == 1


def test_masquerade_off() -> None:
    rs = build_ruleset(state(net("n1", "br1", "10.1.0.0/24", masquerade=False)))
    assert rs.ip.chain("postrouting").rules == ()
    assert verdicts(rs.ip.chain("from-n1").rules) == [(Match(), Accept())]


def test_masquerade_per_subnet() -> None:
    rs = build_ruleset(state(net("n1", "br1", "10.1.0.0/24", "fd00:1::/64", enable_ipv6=True)))
    rules = rs.ip.chain("postrouting").rules
    assert [r.match.saddr for r in rules] == [ip_network("10.1.0.0/24"), ip_network("fd00:1::/64")]
    assert {r.match.oif_not for r in rules} == {"br1"}


def test_ip_forward_off_keeps_drops_only() -> None:
    rs = build_ruleset(state(net("n1", "br1", "10.1.0.0/24")), ip_forward=False)
    assert rs.ip.chain("from-n1").rules == ()
    assert [r.verdict for r in rs.ip.chain("to-n1").rules] == [Accept(), Drop(), Drop()]


def test_cost_is_per_network_not_per_endpoint() -> None:
    from netd.core.model import Endpoint

    st = state(net("n1", "br1", "10.1.0.0/24"))
    before = build_ruleset(st)
    st.endpoints = {
        f"e{i}": Endpoint(
            id=f"e{i}", network="n1", netns=f"c{i}", ifname="eth0", host_ifname=f"v{i}", mac="02:00:00:00:00:01"
        )
        for i in range(50)
    }
    assert build_ruleset(st) == before


def test_deterministic_and_order_independent() -> None:
    a = net("aa", "br-a", "10.1.0.0/24")
    b = net("bb", "br-b", "10.2.0.0/24")
    assert build_ruleset(state(a, b)) == build_ruleset(state(b, a))


def test_chain_keys_hash_unsafe_or_colliding_ids() -> None:
    nets = [
        net("abcdefabcdef0001", "b1", "10.1.0.0/24"),
        net("abcdefabcdef0002", "b2", "10.2.0.0/24"),
        net("my net!", "b3", "10.3.0.0/24"),
        net("short", "b4", "10.4.0.0/24"),
    ]
    keys = chain_keys(nets)
    assert keys["short"] == "short"
    assert len(set(keys.values())) == 4
    for k in keys.values():
        assert k.isalnum() and len(k) <= 12
    assert keys["my net!"].startswith("h")


def test_duplicate_bridge_rejected() -> None:
    with pytest.raises(InvalidError, match="already used"):
        build_ruleset(state(net("a", "br0", "10.1.0.0/24"), net("b", "br0", "10.2.0.0/24")))


def test_bad_bridge_name_rejected() -> None:
    with pytest.raises(InvalidError, match="not a valid interface name"):
        build_ruleset(state(net("a", "br 0; flush ruleset", "10.1.0.0/24")))
