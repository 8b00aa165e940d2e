"""macvlan/ipvlan drivers and the shared parent helper: pure option parsing, validation and planning."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from netd.core import ipam
from netd.core.actions import DeleteChildren, DeleteLinks, EnsureChild, EnsureParent, Observed, Scope
from netd.core.errors import ConflictError, InvalidError, NotFoundError
from netd.core.linkspec import ObservedChild, ObservedHost, ObservedLink
from netd.core.model import DesiredState, Endpoint, Network
from netd.drivers import get_driver, parse_network_create
from netd.drivers.parent import LinkOptions, resolve_parent, split_vlan
from netd.engine.plan import plan


def _link(index: int, name: str, kind: str = "device", **kw: object) -> ObservedLink:
    return ObservedLink(
        index=index,
        ifname=name,
        kind=kind,
        owner=kw.pop("owner", None),
        mtu=1500,
        up=True,  # type: ignore[arg-type]
        master=kw.pop("master", None),
        mac="",
        **kw,
    )  # type: ignore[arg-type]


def _host(*links: ObservedLink) -> ObservedHost:
    h = ObservedHost()
    for lk in links:
        h.by_name[lk.ifname] = lk
        h.by_index[lk.index] = lk
    return h


HOST = _host(
    _link(1, "lo", "loopback"),
    _link(2, "eth0"),
    _link(3, "br0", "bridge"),
    _link(4, "eth1", master=3),
    _link(5, "v51", "vlan", link_index=2, vlan_id=51),
)


def _net(name: str, driver: str = "macvlan", subnet: str = "10.1.0.0/24", **opts: str) -> Network:
    base = Network(
        id=name * 64 if len(name) == 1 else name.ljust(64, "0"),
        name=name,
        driver=driver,  # type: ignore[arg-type]
        bridge="",
        ipam=[ipam.validate_pool(subnet)],
    )
    return base


def parse_link_options(driver: str, opts: dict[str, str]) -> object:
    """The driver's options as a create body gives them (unknown keys refused as the API does)."""
    return parse_network_create({"Name": "n", "Driver": driver, "Options": opts})[1]


def _build(
    state: DesiredState, name: str, driver: str = "macvlan", internal: bool = False, **opts: str
) -> Network:
    base = _net(name, driver).model_copy(update={"internal": internal})
    return get_driver(driver).build_network(base, parse_link_options(driver, opts), HOST, state)


def test_options_are_parsed_and_checked() -> None:
    assert parse_link_options("macvlan", {"parent": "eth0"}) == LinkOptions("eth0", "bridge")
    assert parse_link_options("ipvlan", {"ipvlan_mode": "L3"}) == LinkOptions(None, "l3", "bridge")
    with pytest.raises(InvalidError, match="use one of: l2, l3, l3s"):
        parse_link_options("ipvlan", {"ipvlan_mode": "l4"})
    with pytest.raises(InvalidError, match="bridge, private, vepa"):
        parse_link_options("ipvlan", {"ipvlan_flag": "x"})
    with pytest.raises(InvalidError, match="unknown option 'host_access' for driver ipvlan"):
        parse_link_options("ipvlan", {"host_access": "true"})
    req, opts = parse_network_create(
        {
            "Name": "n",
            "Driver": "macvlan",
            "Options": {"parent": "eth0.50", "com.docker.network.driver.mtu": "1400"},
        }
    )
    assert opts == LinkOptions("eth0.50", "bridge") and req.mtu == 1400
    with pytest.raises(InvalidError, match=r"unknown option 'com\.docker\.network\.bridge\.name'"):
        parse_network_create(
            {"Name": "n", "Driver": "macvlan", "Options": {"com.docker.network.bridge.name": "x"}}
        )


def test_vlan_names() -> None:
    assert split_vlan("eth0.50") == ("eth0", 50)
    assert split_vlan("eth0") is None and split_vlan("br.x") is None
    for bad in ("eth0.0", "eth0.4095"):
        with pytest.raises(InvalidError, match="1-4094"):
            split_vlan(bad)


def test_parent_resolution() -> None:
    st = DesiredState()
    opts = LinkOptions("eth0.50", "bridge")
    p = resolve_parent("n", "i" * 64, "macvlan", opts, False, HOST, st)
    assert (p.kind, p.base, p.vlan_id, p.managed) == ("vlan", "eth0", 50, True)
    assert (
        resolve_parent("n", "i" * 64, "macvlan", LinkOptions("eth0", "bridge"), False, HOST, st).kind == "existing"
    )
    dummy = resolve_parent("n", "i" * 64, "macvlan", LinkOptions("eth0", "bridge"), True, HOST, st)
    assert (dummy.ifname, dummy.kind, dummy.managed) == ("dm-iiiiiiiiiiii", "dummy", True)  # --internal: Docker's
    with pytest.raises(ConflictError, match="VLAN 51 on eth0 already exists as v51"):
        resolve_parent("n", "i" * 64, "macvlan", LinkOptions("eth0.51", "bridge"), False, HOST, st)
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_parent("n", "i" * 64, "macvlan", LinkOptions("eth9", "bridge"), False, HOST, st)
    with pytest.raises(ConflictError, match="port of bridge br0"):
        resolve_parent("n", "i" * 64, "macvlan", LinkOptions("eth1", "passthru"), False, HOST, st)
    with pytest.raises(InvalidError, match="loopback"):
        resolve_parent("n", "i" * 64, "macvlan", LinkOptions("lo", "bridge"), False, HOST, st)


def test_sharing_a_parent() -> None:
    st = DesiredState()
    a = _build(st, "a", parent="eth0.50")
    st.networks["a"] = a
    b = _build(st, "b", parent="eth0.50")  # two macvlan networks on one sub-interface: fine, netd's
    assert b.parent == a.parent
    with pytest.raises(ConflictError, match="macvlan and ipvlan cannot share"):
        _build(st, "c", "ipvlan", parent="eth0.50")
    with pytest.raises(ConflictError, match="passthru"):
        _build(st, "c", parent="eth0.50", macvlan_mode="passthru")
    st.networks["i"] = _build(st, "i", "ipvlan", parent="eth0", ipvlan_mode="l3")
    with pytest.raises(ConflictError, match="same mode and flag"):
        _build(st, "c", "ipvlan", parent="eth0", ipvlan_mode="l2")


def test_host_access_reserves_an_address_outside_the_range() -> None:
    base = _net("h").model_copy(update={"ipam": [ipam.validate_pool("10.1.0.0/24", None, "10.1.0.0/25")]})
    net = get_driver(base).build_network(
        base, LinkOptions("eth0", "bridge", host_access=True), HOST, DesiredState()
    )
    assert str(net.ipam[0].aux_addresses["netd-host-access"]) == "10.1.0.254"
    assert not net.masquerade


def _ep(net: Network, eid: str, ns: str = "web") -> Endpoint:
    return Endpoint(
        id=eid * 64,
        network=net.id,
        netns=ns,
        ifname="eth0",
        host_ifname="",
        mac="02:00:00:00:00:01",
        ipv4=ip_interface("10.1.0.2/24"),
    )  # type: ignore[arg-type]


def _plan(
    st: DesiredState,
    host: ObservedHost,
    children: dict[str, ObservedChild] | None = None,
    scope: Scope | None = None,
) -> list[object]:
    obs = Observed(host=host, netns_alive=set(st.netns) | {"web"}, netns_owned=set(), children=children or {})
    return plan(st, obs, ns_path=lambda ep: f"/run/netns/{ep.netns}", ip_forward=False, scope=scope)  # type: ignore[return-value]


def test_plan_parents_before_children_and_cleanup() -> None:
    st = DesiredState()
    net = _build(st, "a", parent="eth0.50")
    st.networks["a"] = net
    st.networks["b"] = _build(st, "b", parent="eth0.50")
    ep = _ep(net, "e")
    st.endpoints[ep.id] = ep
    actions = _plan(st, HOST)
    assert [type(a) for a in actions] == [EnsureParent, EnsureChild]  # the shared parent once
    parent = actions[0]
    assert isinstance(parent, EnsureParent) and parent.spec.vlan_id == 50 and parent.spec.base == "eth0"
    child = actions[1]
    assert isinstance(child, EnsureChild) and child.spec.parent == "eth0.50" and child.spec.gateway4 is not None
    # in sync: nothing to do
    vlan = _link(9, "eth0.50", "vlan", owner=net.id, link_index=2, vlan_id=50)
    seen = _link(3, "eth0", "macvlan", owner=ep.id, addresses=(ep.ipv4,))
    synced = {ep.id: ObservedChild(seen, "/run/netns/web")}
    assert _plan(st, _host(*HOST.by_name.values(), vlan), synced) == []
    # the endpoint is gone: its child is deleted; the sub-interface stays while network b uses it
    del st.endpoints[ep.id]
    del st.networks["a"]
    actions = _plan(st, _host(*HOST.by_name.values(), vlan), synced)
    assert actions == [DeleteChildren((("/run/netns/web", "eth0"),), owner="endpoints")]
    # the last network is gone: netd's sub-interface goes, the pre-existing v51 stays
    del st.networks["b"]
    assert _plan(st, _host(*HOST.by_name.values(), vlan)) == [DeleteLinks(("eth0.50",), owner="networks")]


def test_ipvlan_l3_routes_through_the_interface() -> None:
    st = DesiredState()
    net = _build(st, "l", "ipvlan", parent="eth0", ipvlan_mode="l3", ipvlan_flag="private")
    st.networks["l"] = net
    ep = _ep(net, "f")
    st.endpoints[ep.id] = ep
    child = next(a for a in _plan(st, HOST) if isinstance(a, EnsureChild))
    assert child.spec.default_dev and child.spec.gateway4 is None and child.spec.mac is None
    assert (child.spec.mode, child.spec.flag) == ("l3", "private")
