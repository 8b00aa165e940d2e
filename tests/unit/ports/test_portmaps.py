"""The reconciler's incremental published-port maps build exactly what a fresh build does, change after change."""

from __future__ import annotations

import random

from port_states import ep, pm, ports_state

from netd.core.epindex import EndpointIndex
from netd.core.model import DesiredState
from netd.firewall.portmaps import PortMaps
from netd.firewall.rules import build_ruleset

NET = "a1b2c3d4e5f6"  # "front": dual-stack, publishes


def _next(st: DesiredState, rng: random.Random, i: int) -> DesiredState:
    """Copy-on-write as the service does it: a new endpoints map, changed endpoints are new objects."""
    eps = dict(st.endpoints)
    what = rng.choice(["add", "add", "remove", "change", "network"])
    if what == "add" or not eps:
        port = rng.choice([9000 + i, 8080, 53])  # 8080 and 53 collide on purpose: the greatest id wins
        proto = rng.choice(["tcp", "udp"])
        ip = rng.choice([None, "127.0.0.1", "::"])
        new = ep(
            f"e{i:04d}", NET, f"10.90.1.{10 + i % 200}/24", f"fd00:90:1::{i + 10:x}/64", pm(port, 80, proto, ip)
        )
        eps[new.id] = new
    elif what == "remove":
        del eps[rng.choice(sorted(eps))]
    elif what == "change":
        victim = eps[rng.choice(sorted(eps))]
        eps[victim.id] = victim.model_copy(update={"ports": [pm(7000 + i, 81, "udp")]})
    else:  # the internal network starts publishing nothing, the back network loses its masquerade: a reset
        nets = dict(st.networks)
        nets["db"] = nets["db"].model_copy(update={"internal": not nets["db"].internal})
        return DesiredState(networks=nets, endpoints=eps)
    return DesiredState(networks=st.networks, endpoints=eps)


def test_incremental_equals_fresh_over_random_changes() -> None:
    rng = random.Random(14)
    maps = PortMaps()
    st = ports_state()
    for i in range(300):
        st = _next(st, rng, i)
        assert build_ruleset(st, ports=maps) == build_ruleset(st), f"step {i}"


def test_unchanged_state_reuses_the_maps() -> None:
    maps = PortMaps()
    st = ports_state()
    a = build_ruleset(st, ports=maps)
    b = build_ruleset(DesiredState(networks=st.networks, endpoints=dict(st.endpoints)), ports=maps)
    assert [s for s in a.ip.sets if s.name.startswith("dnat")] == [
        s for s in b.ip.sets if s.name.startswith("dnat")
    ]
    assert all(x is y for x, y in zip(a.ip.sets[3:], b.ip.sets[3:], strict=True))


def test_catching_up_by_the_endpoint_index_equals_fresh() -> None:
    """With the state's EndpointIndex the maps look only at the endpoints it names as changed since the state
    they last saw (several changes back when some states were never built, all of them when it cannot say)."""
    rng = random.Random(41)
    maps = PortMaps()
    st = ports_state()
    idx = EndpointIndex.build(st)
    for i in range(400):
        new = _next(st, rng, i)
        changed = {
            k
            for k in st.endpoints.keys() | new.endpoints.keys()
            if st.endpoints.get(k) is not new.endpoints.get(k)
        }
        idx = idx.derive(new, changed if rng.random() > 0.05 else None)
        st = new
        r = rng.random()
        if r < 0.2:
            continue  # a state the reconciler never planned
        given = idx if r < 0.9 else None
        assert build_ruleset(st, ports=maps, index=given) == build_ruleset(st), f"step {i}"
