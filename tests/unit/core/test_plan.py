from ipaddress import ip_interface

from samples import one_endpoint_state

from netd.actions import (
    DeleteLinks,
    EnsureBridge,
    EnsureNetns,
    EnsureVeth,
    Observed,
    RemoveNetns,
    Scope,
    SetSysctl,
)
from netd.linkspec import ObservedHost, ObservedLink
from netd.model import DesiredState
from netd.naming import mac_for
from netd.plan import plan


def _state() -> DesiredState:
    return one_endpoint_state()


def _link(
    index: int, name: str, kind: str, owner: str | None, master: int | None = None, **kw: object
) -> ObservedLink:
    return ObservedLink(
        index=index,
        ifname=name,
        kind=kind,
        owner=owner,
        mtu=kw.get("mtu", 1500),  # type: ignore[arg-type]
        up=True,
        master=master,
        mac=mac_for(owner) if owner and kind == "bridge" else "",
        addresses=kw.get("addresses", ()),
    )  # type: ignore[arg-type]


def _host(*links: ObservedLink) -> ObservedHost:
    h = ObservedHost()
    for link in links:
        h.by_name[link.ifname] = link
        h.by_index[link.index] = link
        if link.owner and link.kind == "bridge":
            h.bridges[link.owner] = link
        elif link.owner and link.kind == "veth":
            h.veths[link.owner] = link
    return h


def _plan(state: DesiredState, obs: Observed, scope: Scope | None = None) -> list[object]:
    return list(plan(state, obs, ns_path=lambda ep: f"/run/netns/{ep.netns}", ip_forward=True, scope=scope))


def test_empty_kernel_builds_everything_in_order() -> None:
    actions = _plan(_state(), Observed(host=_host(), netns_alive=set(), netns_owned=set()))
    kinds = [type(a) for a in actions]
    assert kinds == [SetSysctl, EnsureNetns, EnsureBridge, EnsureVeth]
    veth = actions[3]
    assert isinstance(veth, EnsureVeth)
    assert str(veth.spec.gateway4) == "172.30.0.1" and veth.spec.netns.path == "/run/netns/web"


def test_in_sync_kernel_plans_nothing() -> None:
    st = _state()
    br = _link(5, "br-app", "bridge", "a" * 64, mtu=1400, addresses=(ip_interface("172.30.0.1/24"),))
    ve = _link(6, "vethe", "veth", "e" * 64, master=5)
    obs = Observed(
        host=_host(br, ve), netns_alive={"web"}, netns_owned={"web"}, sysctls={"net.ipv4.ip_forward": "1"}
    )
    assert _plan(st, obs) == []


def test_drift_is_repaired_and_strays_removed_but_foreign_untouched() -> None:
    st = _state()
    br = _link(5, "br-app", "bridge", "a" * 64, mtu=9000, addresses=())
    stray = _link(7, "vethold", "veth", "c" * 64, master=5)
    foreign = _link(8, "docker0", "bridge", None)
    old_br = _link(9, "br-old", "bridge", "d" * 64)
    obs = Observed(
        host=_host(br, stray, foreign, old_br),
        netns_alive={"web"},
        netns_owned={"web", "gone"},
        sysctls={"net.ipv4.ip_forward": "1"},
    )
    actions = _plan(st, obs)
    assert isinstance(actions[0], EnsureBridge) and "mtu" in actions[0].reason
    assert isinstance(actions[1], EnsureVeth)
    assert DeleteLinks(("vethold",), owner="endpoints") in actions
    assert DeleteLinks(("br-old",), owner="networks") in actions
    assert RemoveNetns("gone", owner="gone") in actions
    assert not any("docker0" in str(a) for a in actions)


def test_bridge_gets_a_fixed_mac_and_a_changed_one_is_drift() -> None:
    st = _state()
    br = _link(5, "br-app", "bridge", "a" * 64, mtu=1400, addresses=(ip_interface("172.30.0.1/24"),))
    assert br.mac == mac_for("a" * 64)
    moved = ObservedLink(**{**br.__dict__, "mac": "02:00:00:00:00:99"})
    ve = _link(6, "vethe", "veth", "e" * 64, master=5)
    obs = Observed(
        host=_host(moved, ve), netns_alive={"web"}, netns_owned={"web"}, sysctls={"net.ipv4.ip_forward": "1"}
    )
    (action,) = _plan(st, obs)
    assert isinstance(action, EnsureBridge) and action.spec.mac == mac_for("a" * 64) and "mac" in action.reason


def test_scope_limits_the_plan() -> None:
    st = _state()
    obs = Observed(host=_host(), netns_alive=set(), netns_owned=set(), sysctls={"net.ipv4.ip_forward": "1"})
    only_netns = Scope(networks=frozenset(), endpoints=frozenset(), netns=frozenset({"web"}))
    assert [type(a) for a in _plan(st, obs, only_netns)] == [EnsureNetns]


def test_internal_network_gets_no_default_route() -> None:
    st = _state()
    st.networks["app"].internal = True
    actions = _plan(st, Observed(host=_host(), netns_alive={"web"}, netns_owned=set()))
    veth = next(a for a in actions if isinstance(a, EnsureVeth))
    assert veth.spec.gateway4 is None
