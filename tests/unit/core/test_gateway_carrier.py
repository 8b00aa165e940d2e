"""Which endpoint carries a namespace's default route (netd.core.gateway): pure."""

from __future__ import annotations

from ipaddress import ip_network

from netd.core.gateway import assign_default_routes, carriers
from netd.core.model import DesiredState, Endpoint, IpamConfig, Network


def _state(*eps: tuple[str, str, str, int], internal: tuple[str, ...] = ()) -> DesiredState:
    st = DesiredState()
    for i, name in enumerate(("a", "b", "c", "i")):
        st.networks[name] = Network(
            id=name * 8,
            name=name,
            driver="bridge",
            bridge=f"br-{name}",
            internal=name in internal,
            ipam=[IpamConfig(subnet=ip_network(f"172.30.{i}.0/24"))],
        )
    for ep_id, net, ns, prio in eps:
        st.endpoints[ep_id] = Endpoint(
            id=ep_id, network=net * 8, netns=ns, ifname="eth0", host_ifname="v", mac="", gw_priority=prio
        )
    return st


def test_the_first_connected_carries_it_and_internal_networks_never_do() -> None:
    eps = (("e1", "i", "x", 0), ("e2", "a", "x", 0), ("e3", "b", "x", 0), ("e4", "b", "y", 0))
    st = _state(*eps, internal=("i",))
    assert carriers(st) == {"netns:x": "e2", "netns:y": "e4"}


def test_the_highest_priority_wins_and_a_tie_goes_to_the_first() -> None:
    st = _state(("e1", "a", "x", 0), ("e2", "b", "x", 5), ("e3", "c", "x", 5))
    assert carriers(st) == {"netns:x": "e2"}
    st = _state(("e1", "a", "x", -1), ("e2", "b", "x", -2))
    assert carriers(st) == {"netns:x": "e1"}


def test_assign_hands_over_when_the_carrier_goes() -> None:
    st = _state(("e1", "a", "x", 0), ("e2", "b", "x", 0))
    assert assign_default_routes(st) == {"e2"}  # both came with the model's default True
    assert st.endpoints["e1"].default_route and not st.endpoints["e2"].default_route
    new = st.copy_for_change()
    del new.endpoints["e1"]
    before = st.endpoints["e2"]
    assert assign_default_routes(new) == {"e2"}
    assert new.endpoints["e2"].default_route
    assert not before.default_route  # replaced, never changed in place


def test_assign_for_one_namespace_leaves_the_others_alone() -> None:
    st = _state(("e1", "a", "x", 0), ("e2", "b", "x", 0), ("e3", "a", "y", 0), ("e4", "b", "y", 0))
    assert assign_default_routes(st, {"netns:x"}) == {"e2"}
    assert st.endpoints["e4"].default_route  # not looked at


def test_one_namespace_under_two_spellings_is_one_group() -> None:
    """``ns_of`` groups endpoints by namespace identity: "x" by name and "/run/x" by path are one namespace."""
    st = _state(("e1", "a", "x", 0), ("e2", "b", "x", 0))
    st.endpoints["e2"] = st.endpoints["e2"].model_copy(update={"netns": None, "netns_path": "/run/x"})
    assert carriers(st) == {"netns:x": "e1", "path:/run/x": "e2"}  # by spelling: two carriers
    same = lambda ep: "inode:7"  # noqa: E731
    assert carriers(st, ns_of=same) == {"inode:7": "e1"}
    assert assign_default_routes(st, {"inode:7"}, same) == {"e2"}  # both started with the flag set
    assert [ep.default_route for ep in st.endpoints.values()] == [True, False]
