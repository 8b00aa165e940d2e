"""Encrypted overlays, pure parts: SPIs, keys, the rotation stages, drift and the order of repairs."""

from __future__ import annotations

import itertools
from ipaddress import ip_address

import pytest

from netd.core.ipsecspec import (
    MASTER_KEY_BYTES,
    DesiredXfrm,
    KeyRing,
    build_xfrm,
    check_spis,
    derive_sa_key,
    derive_spi,
    is_owned,
    merge,
    new_ring,
    owner_tag,
)
from netd.drivers.overlay_crypto import (
    Stage,
    build_mark_rules,
    diff_xfrm,
    next_step,
    plan_rotation,
    plan_xfrm,
)

NODES = [ip_address(f"192.0.2.{i}") for i in range(1, 41)]


def test_spis_unique_per_pair_direction_and_generation() -> None:
    seen: dict[tuple[object, int], tuple[object, ...]] = {}
    for vni in (1, 4097, 0xFFFFFF):
        for gen in range(1, 5):
            for src, dst in itertools.permutations(NODES, 2):
                spi = derive_spi(vni, gen, src, dst)
                assert spi >= 0x100
                key = (dst, spi)  # what the kernel keys an SA by
                assert key not in seen, (seen[key], (vni, gen, src, dst))
                seen[key] = (vni, gen, src, dst)


def test_consecutive_generations_of_one_flow_never_share_an_spi() -> None:
    a, b = NODES[:2]
    spis = [derive_spi(7, gen, a, b) for gen in range(1, 40)]
    assert all(x != y for x, y in itertools.pairwise(spis))


def test_every_node_derives_the_same_spi_and_key() -> None:
    ring = new_ring(10)
    a, b = NODES[:2]
    on_a = build_xfrm(ring, a, {b})
    on_b = build_xfrm(ring, b, {a})
    assert on_a.sas == on_b.sas  # A's outbound SA is B's inbound one, byte for byte


def test_a_new_sender_epoch_gives_new_sas_for_its_direction_only() -> None:
    ring = new_ring(10)
    a, b = NODES[:2]
    before = build_xfrm(ring, b, {a: 0})
    after = build_xfrm(ring, b, {a: 1})  # a rebooted: its sequence numbers restart, its SAs must be new
    changed = before.sas ^ after.sas
    assert {(sa.src, sa.dst) for sa in changed} == {(a, b)} and len(changed) == 2
    assert before.policies == after.policies  # b still sends on its own, unchanged SA
    assert build_xfrm(ring, a, {b: 0}, local_epoch=1).sas == after.sas  # a agrees


def test_each_sa_has_its_own_key_and_salt() -> None:
    master = bytes(range(MASTER_KEY_BYTES))
    a, b, c = NODES[:3]
    keys = {derive_sa_key(master, 5, 1, s, d) for s, d in [(a, b), (b, a), (a, c)]}
    keys |= {derive_sa_key(master, 5, 2, a, b), derive_sa_key(master, 6, 1, a, b)}
    assert len(keys) == 5
    assert all(len(k) == 16 and len(s) == 4 for k, s in keys)


def test_new_keys_are_random() -> None:
    assert new_ring(1).keys[0][1] != new_ring(1).keys[0][1]


def test_build_xfrm_shape() -> None:
    ring = new_ring(4097)
    local, peers = NODES[0], set(NODES[1:4])
    d = build_xfrm(ring, local, peers | {local})
    assert len(d.sas) == 6 and len(d.policies) == 3
    assert {p.dst for p in d.policies} == peers
    for p in d.policies:
        assert (p.src, p.dport, p.proto, p.mark, p.reqid) == (local, 4789, 17, owner_tag(4097), owner_tag(4097))
        assert p.tmpl_spi == derive_spi(4097, 1, local, p.dst)
    assert all(is_owned(sa.reqid) for sa in d.sas)
    assert "key" not in repr(next(iter(d.sas))).replace("KeyRing", "")  # keys never printed
    assert "generations=(1,)" in repr(ring) and str(ring.keys[0][1]) not in repr(ring)


def test_build_xfrm_refuses_mixed_ip_versions() -> None:
    with pytest.raises(ValueError, match="IP version"):
        build_xfrm(new_ring(1), NODES[0], {ip_address("2001:db8::1")})


def test_ring_and_tag_validation() -> None:
    with pytest.raises(ValueError, match="tx generation 2"):
        KeyRing(1, ((1, bytes(32)),), 2)
    with pytest.raises(ValueError, match="32 bytes"):
        KeyRing(1, ((1, bytes(16)),), 1)
    with pytest.raises(ValueError, match="vni 0"):
        owner_tag(0)
    assert not is_owned(0xD0C4E3) and not is_owned(0x6E000000) and is_owned(0x6E000001)


def test_check_spis_names_both_flows() -> None:
    ring = new_ring(3)
    sa = next(iter(build_xfrm(ring, NODES[0], {NODES[1]}).sas))
    twin = type(sa)(NODES[5], sa.dst, sa.spi, sa.key, sa.salt, sa.reqid)
    with pytest.raises(ValueError, match="rotate-key"):
        check_spis({sa, twin})


# ---------------------------------------------------------------------------------------------- rotation


def _holds(ring: KeyRing, local: object, peers: set[object]) -> DesiredXfrm:
    return build_xfrm(ring, local, peers)  # type: ignore[arg-type]


def test_rotation_stages_in_order() -> None:
    ring = new_ring(9)
    steps = plan_rotation(ring)
    assert [s.stage for s in steps] == [Stage.ACCEPT, Stage.SWITCH, Stage.PRUNE]
    accept, switch, prune = (s.ring for s in steps)
    assert accept.generations == (1, 2) and accept.tx == 1
    assert switch.generations == (1, 2) and switch.tx == 2
    assert prune.generations == (2,) and prune.tx == 2
    assert accept.key(2) == switch.key(2) == prune.key(2) and accept.key(1) == ring.key(1)
    with pytest.raises(ValueError, match="already under way"):
        plan_rotation(accept)


def test_rotation_never_sends_a_key_the_receiver_lacks() -> None:
    """Three nodes apply the stages one after another in every order the barrier allows: at every instant, the
    SPI each node's out policy names is installed as an SA on the receiving node."""
    nodes = NODES[:3]
    steps = plan_rotation(new_ring(77))
    before = KeyRing(77, steps[0].ring.keys[:1], 1)  # the ring before the rotation (the same gen-1 key)
    rings = [before, *(s.ring for s in steps)]
    for order in itertools.permutations(nodes):
        state = dict.fromkeys(nodes, 0)
        for stage in (1, 2, 3):
            for node in order:  # nodes move one at a time within a stage
                state[node] = stage
                held = {n: _holds(rings[state[n]], n, set(nodes) - {n}) for n in nodes}
                for n in nodes:
                    for pol in held[n].policies:
                        assert any(sa.spi == pol.tmpl_spi and sa.src == n for sa in held[pol.dst].sas), (
                            order,
                            stage,
                            n,
                        )


def test_next_step_waits_for_every_node() -> None:
    steps = plan_rotation(new_ring(1))
    nodes = ["a", "b", "c"]
    assert next_step(steps, 0, {}, nodes) is steps[0]
    assert next_step(steps, 1, {"a": 1, "b": 1}, nodes) is None
    assert next_step(steps, 1, {"a": 1, "b": 1, "c": 1}, nodes) is steps[1]
    assert next_step(steps, 2, {"a": 2, "b": 2, "c": 1}, nodes) is None
    assert next_step(steps, 2, {"a": 2, "b": 2, "c": 2}, ["a", "b"]) is steps[2]  # c left: no hold-up
    assert next_step(steps, 3, {"a": 3, "b": 3, "c": 3}, nodes) is None


# ---------------------------------------------------------------------------------------------- drift


def test_no_drift_no_actions() -> None:
    d = build_xfrm(new_ring(4), NODES[0], set(NODES[1:3]))
    assert diff_xfrm(d, d).clean
    assert plan_xfrm(d, d) == []


def test_rotation_actions_are_ordered_add_switch_remove() -> None:
    ring = new_ring(4)
    local, peers = NODES[0], set(NODES[1:3])
    accept, switch, prune = (s.ring for s in plan_rotation(ring))
    before = build_xfrm(KeyRing(4, accept.keys[:1], 1), local, peers)
    a1 = plan_xfrm(build_xfrm(accept, local, peers), before)
    assert [k for k, _ in a1] == ["add_sa"] * 4
    a2 = plan_xfrm(build_xfrm(switch, local, peers), build_xfrm(accept, local, peers))
    assert [k for k, _ in a2] == ["update_policy"] * 2
    a3 = plan_xfrm(build_xfrm(prune, local, peers), build_xfrm(switch, local, peers))
    assert [k for k, _ in a3] == ["del_sa"] * 4
    # straight from "before" to "pruned" (a node that missed the rotation): add, switch, then remove
    kinds = [k for k, _ in plan_xfrm(build_xfrm(prune, local, peers), before)]
    assert kinds == ["add_sa"] * 4 + ["update_policy"] * 2 + ["del_sa"] * 4


def test_drift_finds_stray_missing_and_changed() -> None:
    ring = new_ring(4)
    local = NODES[0]
    want = build_xfrm(ring, local, {NODES[1]})
    gone_peer = build_xfrm(ring, local, {NODES[2]})
    pol = next(iter(want.policies))
    stale = type(pol)(pol.src, pol.dst, pol.tmpl_spi ^ 0x10, pol.reqid, pol.mark)
    sa = next(iter(want.sas))
    observed = merge(gone_peer, DesiredXfrm(frozenset(want.sas - {sa}), frozenset({stale})))
    drift = diff_xfrm(want, observed)
    assert drift.missing_sas == {sa} and drift.changed_policies == want.policies
    assert drift.stray_sas == gone_peer.sas and drift.stray_policies == gone_peer.policies
    text = drift.describe()
    assert any(t.startswith("missing esp") for t in text) and any(t.startswith("stray policy") for t in text)
    kinds = [k for k, _ in plan_xfrm(want, observed)]
    assert kinds == ["add_sa", "update_policy", "del_policy", "del_sa", "del_sa"]


def test_same_spi_other_key_is_removed_before_readding() -> None:
    want = build_xfrm(new_ring(4), NODES[0], {NODES[1]})
    sa = next(iter(want.sas))
    old = type(sa)(sa.src, sa.dst, sa.spi, bytes(16), sa.salt, sa.reqid)
    observed = DesiredXfrm(frozenset((want.sas - {sa}) | {old}), want.policies)
    assert plan_xfrm(want, observed) == [("del_sa", old), ("add_sa", sa)]


def test_mark_rules() -> None:
    out, inp = build_mark_rules(4097)
    assert out == "udp dport 4789 @th,96,24 4097 meta mark set 0x6e001001"
    assert inp == "udp dport 4789 @th,96,24 4097 meta ipsec missing drop"
