from ipaddress import ip_interface

from samples import one_endpoint_state

from netd.core.actions import (
    ApplyFirewall,
    DeleteLinks,
    EnsureBridge,
    EnsureNetns,
    EnsureVeth,
    FirewallSeen,
    FlushConntrack,
    MarkNetns,
    Observed,
    RemoveAdoptedAddresses,
    RemoveNetns,
    RestoreSysctls,
    Scope,
    SetSysctl,
)
from netd.core.linkspec import ObservedHost, ObservedLink
from netd.core.model import DesiredState, PortMapping
from netd.core.naming import mac_for
from netd.engine.plan import plan
from netd.firewall.rules import build_ruleset


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
    assert kinds == [SetSysctl, MarkNetns, EnsureNetns, EnsureBridge, EnsureVeth]
    veth = actions[4]
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
    gone = actions.index(RemoveNetns("gone", owner="gone"))
    assert actions[gone + 1] == MarkNetns("gone", owned=False, owner="gone")  # the marker goes after the netns
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
    assert [type(a) for a in _plan(st, obs, only_netns)] == [MarkNetns, EnsureNetns]


def test_internal_network_gets_no_default_route() -> None:
    st = _state()
    st.networks["app"].internal = True
    actions = _plan(st, Observed(host=_host(), netns_alive={"web"}, netns_owned=set()))
    veth = next(a for a in actions if isinstance(a, EnsureVeth))
    assert veth.spec.gateway4 is None


def _synced(st: DesiredState, **kw: object) -> Observed:
    br = _link(5, "br-app", "bridge", "a" * 64, mtu=1400, addresses=(ip_interface("172.30.0.1/24"),))
    ve = _link(6, "vethe", "veth", "e" * 64, master=5)
    return Observed(
        host=_host(br, ve),
        netns_alive={"web"},
        netns_owned={"web"},
        sysctls={"net.ipv4.ip_forward": "1"},
        **kw,  # type: ignore[arg-type]
    )


def test_the_firewall_is_planned_after_the_bridges_and_before_the_endpoints() -> None:
    st = _state()
    rules = build_ruleset(st)
    obs = Observed(host=_host(), netns_alive={"web"}, netns_owned={"web"}, firewall=FirewallSeen(rules, None))
    kinds = [type(a) for a in _plan(st, obs)]
    assert kinds == [SetSysctl, EnsureBridge, ApplyFirewall, EnsureVeth]  # no flush: nothing applied before
    assert _plan(st, _synced(st, firewall=FirewallSeen(rules, rules))) == []
    (again,) = _plan(st, _synced(st, firewall=FirewallSeen(rules, rules, in_sync=False)))
    assert isinstance(again, ApplyFirewall) and again.reason == "missing or changed in the kernel"
    assert again.networks == ("a" * 64,)  # a failure is an error of the networks in scope


def test_a_changed_udp_port_is_followed_by_its_conntrack_flush() -> None:
    before = _state()
    after = _state()
    after.endpoints["e" * 64].ports = [PortMapping(host_ip=None, host_port=5353, container_port=53, proto="udp")]
    obs = _synced(after, firewall=FirewallSeen(build_ruleset(after), build_ruleset(before)))
    obs.sysctls["net/ipv4/conf/br-app/route_localnet"] = "0"
    actions = _plan(after, obs)
    assert [type(a) for a in actions] == [ApplyFirewall, FlushConntrack, SetSysctl]
    assert actions[1] == FlushConntrack(((4, None, 5353),))  # the network has IPv4 only
    assert actions[2] == SetSysctl("net/ipv4/conf/br-app/route_localnet", "1", owner="a" * 64, best_effort=True)


def test_what_netd_changed_on_foreign_things_is_put_back_by_plan_actions() -> None:
    st = _state()
    obs = _synced(st)
    obs.changed_sysctls = frozenset({"net.ipv6.conf.all.forwarding", "net/ipv6/conf/eth0/accept_ra"})
    obs.changed_addresses = {"g" * 64: ("br0", ("10.9.0.1/24",)), "a" * 64: ("br-app", ("172.30.0.1/24",))}
    actions = _plan(st, obs)
    assert actions == [
        RestoreSysctls(("net.ipv6.conf.all.forwarding", "net/ipv6/conf/eth0/accept_ra")),
        RemoveAdoptedAddresses("br0", ("10.9.0.1/24",), owner="g" * 64),  # its network is gone; app's is not
    ]
    with_v6 = plan(st, obs, ns_path=lambda ep: "", ip_forward=True, ip6_forward=True)
    assert not [a for a in with_v6 if isinstance(a, RestoreSysctls)]  # an IPv6 network still needs them
