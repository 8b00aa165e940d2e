"""EndpointIndex: derived change by change, it never disagrees with one built from the state (order included)."""

from __future__ import annotations

import random
from ipaddress import IPv4Interface

from netd.core.epindex import EndpointIndex
from netd.core.model import DesiredState, Endpoint, Network, PortMapping
from netd.engine.state import diff


def _tables(idx: EndpointIndex) -> dict[str, dict[object, list[str]]]:
    return {t: {k: list(b) for k, b in m.items()} for t, m in idx.tables.items()}


def _state() -> DesiredState:
    st = DesiredState()
    for n in ("a", "b", "c"):
        st.networks[n] = Network(id=n * 64, name=n, bridge=f"br-{n}")
    return st


def _endpoint(rng: random.Random, step: int) -> Endpoint:
    path = rng.random() < 0.3
    ns = rng.choice(["n0", "n1", "n2", "n3", "n4"])
    ports = [
        PortMapping(host_port=rng.choice([80, 81, 8080]), container_port=80, proto=rng.choice(["tcp", "udp"]))
        for _ in range(rng.choice([0, 0, 1, 2]))
    ]
    return Endpoint(
        id=f"ep{step:04d}",
        network=rng.choice("abc") * 64,
        netns=None if path else ns,
        netns_path=f"/proc/{ns[1:]}/ns/net" if path else None,
        netns_inode=int(ns[1:]) + 100 if path else None,
        ifname="eth0",
        host_ifname=f"v{step}",
        mac="02:00:00:00:00:01",
        ipv4=IPv4Interface(f"10.0.{step % 250}.2/16"),
        ports=ports,
        container_id=rng.choice([None, None, "c1", "c2"]),
        links=rng.choice([[], [], ["n1:web"]]),
    )


def test_derived_index_matches_a_fresh_build_over_random_changes() -> None:
    rng = random.Random(14)
    st = _state()
    idx = EndpointIndex.build(st)
    history: list[tuple[DesiredState, EndpointIndex]] = []
    for step in range(600):
        new = st.copy_for_change()
        changed: set[str] = set()
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            r = rng.random()
            if r < 0.45 or not new.endpoints:
                ep = _endpoint(rng, step * 10 + len(changed))
                new.endpoints[ep.id] = ep
                changed.add(ep.id)
            elif r < 0.75:
                gone = rng.choice(sorted(new.endpoints))
                del new.endpoints[gone]
                changed.add(gone)
            else:  # replaced in place (a default route handed over, a new address): keeps its position
                ep_id = rng.choice(sorted(new.endpoints))
                ep = new.endpoints[ep_id]
                new.endpoints[ep_id] = ep.model_copy(update={"default_route": not ep.default_route})
                changed.add(ep_id)
        if rng.random() < 0.1:  # a change that names nothing: built anew
            nxt = idx.derive(new, None)
        else:
            nxt = idx.derive(new, changed | {rng.choice(sorted(st.endpoints or {"x": None}))})  # extra ids: no-op
        assert _tables(nxt) == _tables(EndpointIndex.build(new)), step
        assert _tables(idx) == _tables(EndpointIndex.build(st)), step  # the old one is unchanged
        history.append((st, idx))
        st, idx = new, nxt
    # changes_since: a consumer that saw an earlier state catches up with exactly what changed since
    for back in range(1, 20):
        old_state, old_idx = history[-back]
        since = idx.changes_since(old_idx.serial)
        if since is None:
            continue
        differ = {k for k in old_state.endpoints.keys() | st.endpoints.keys()}
        differ = {k for k in differ if old_state.endpoints.get(k) is not st.endpoints.get(k)}
        assert differ <= since, back
    assert idx.changes_since(idx.serial) == frozenset()
    assert idx.changes_since(-1) is None


def test_lookups() -> None:
    st = _state()
    ep = Endpoint(
        id="e1",
        network="a" * 64,
        netns="n1",
        ifname="eth0",
        host_ifname="v1",
        mac="02:00:00:00:00:01",
        ports=[PortMapping(host_port=80, container_port=80)],
        container_id="c1",
    )
    st.endpoints[ep.id] = ep
    idx = EndpointIndex.build(st)
    assert idx.in_target("netns:n1") == st.endpoints_in("netns:n1") == [ep]
    assert idx.of_network("a" * 64) == st.endpoints_of("a" * 64) == [ep]
    assert idx.endpoints("port", ("tcp", 80)) == [ep]
    assert idx.endpoints("container", "c1") == [ep]
    assert list(idx.netns_names()) == ["n1"]
    assert not idx.has_links


def test_a_change_set_that_misses_an_endpoint_is_not_trusted() -> None:
    """A scope that forgot an endpoint that came or went: the index is built anew (and says it cannot name the
    changes), the journal compares every endpoint."""
    rng = random.Random(3)
    st = _state()
    for i in range(5):
        ep = _endpoint(rng, i)
        st.endpoints[ep.id] = ep
    idx = EndpointIndex.build(st)
    new = st.copy_for_change()
    a, b = _endpoint(rng, 10), _endpoint(rng, 11)
    new.endpoints[a.id] = a
    new.endpoints[b.id] = b
    derived = idx.derive(new, {a.id})  # b not named
    assert _tables(derived) == _tables(EndpointIndex.build(new))
    assert derived.changes_since(idx.serial) is None
    records = diff(st, new, {a.id})
    assert [r["key"] for r in records] == [a.id, b.id]


def test_the_journal_catches_an_endpoint_replaced_but_not_named() -> None:
    """A change set that names one endpoint while another was replaced in place (say its default route moved):
    the journal still records the second one (a C-level compare of the rest finds it)."""
    rng = random.Random(4)
    st = _state()
    for i in range(5):
        ep = _endpoint(rng, i)
        st.endpoints[ep.id] = ep
    new = st.copy_for_change()
    a = _endpoint(rng, 10)
    new.endpoints[a.id] = a
    victim = next(iter(st.endpoints.values()))
    new.endpoints[victim.id] = victim.model_copy(update={"default_route": not victim.default_route})
    records = diff(st, new, {a.id})
    assert {r["key"] for r in records} == {a.id, victim.id}
    assert diff(st, new, {a.id, victim.id}) == diff(st, new)
