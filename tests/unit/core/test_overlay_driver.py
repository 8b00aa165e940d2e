"""The overlay driver's planning (pure): links only with local endpoints, entries from the cluster's view."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from netd.core.actions import DeleteLinks, EnsureBridge, EnsureVeth, Observed, Scope
from netd.core.errors import InvalidError
from netd.core.linkspec import ObservedHost, ObservedLink
from netd.core.model import DesiredState, Endpoint, IpamConfig, Netns, Network
from netd.core.vxlanspec import FdbEntry, NeighEntry, ObservedEntries, ObservedVxlan, PeerEntry
from netd.drivers import get_driver
from netd.drivers.overlay import EnsureVxlan, OverlaySeen, SyncPeers, bridge_mac, overlay_mac, parse_vni
from netd.engine.plan import plan
from netd.firewall.rules import build_ruleset

NET_ID = "ab" * 32
EP_ID = "cd" * 32
LOCAL = IPv4Address("192.0.2.1")


def _net() -> Network:
    return Network(
        id=NET_ID,
        name="ov",
        driver="overlay",
        bridge="ov-" + NET_ID[:12],
        vxlan="vx-" + NET_ID[:12],
        vni=4097,
        attachable=True,
        mtu=1450,
        ipam=[IpamConfig(subnet=IPv4Network("10.0.9.0/24"), gateway=IPv4Address("10.0.9.1"))],
    )


def _state(with_endpoint: bool = True) -> DesiredState:
    st = DesiredState(networks={"ov": _net()})
    if with_endpoint:
        st.netns["web"] = Netns(name="web")
        st.endpoints[EP_ID] = Endpoint(
            id=EP_ID,
            network=NET_ID,
            netns="web",
            ifname="eth0",
            host_ifname="veth" + EP_ID[:11],
            mac=overlay_mac(IPv4Address("10.0.9.2")),
            ipv4=IPv4Interface("10.0.9.2/24"),
            default_route=False,
        )
    return st


PEER = PeerEntry(mac="02:42:0a:00:09:03", addresses=(IPv4Address("10.0.9.3"),), vtep=IPv4Address("192.0.2.2"))


def _seen(active: bool = True, **kw: object) -> OverlaySeen:
    return OverlaySeen(node="n1", local=LOCAL, port=4789, active={NET_ID} if active else set(), **kw)  # type: ignore[arg-type]


def _link(name: str, kind: str, index: int, owner: str | None = NET_ID, master: int | None = None) -> ObservedLink:
    return ObservedLink(
        index=index,
        ifname=name,
        kind=kind,
        owner=owner,
        mtu=1450,
        up=True,
        master=master,
        mac=bridge_mac(NET_ID, "n1"),
        addresses=(IPv4Interface("10.0.9.1/24"),),
    )


def _plan(st: DesiredState, host: ObservedHost, seen: OverlaySeen, scope: Scope | None = None) -> list[object]:
    obs = Observed(host=host, netns_alive={"web"}, netns_owned={"web"}, extra={"overlay": seen})
    return list(plan(st, obs, ns_path=lambda ep: "/run/netns/web", ip_forward=False, scope=scope))


def test_a_node_with_an_endpoint_gets_bridge_vxlan_veth_and_the_remote_entries() -> None:
    actions = _plan(_state(), ObservedHost(), _seen(peers={NET_ID: [PEER]}))
    kinds = [type(a) for a in actions]
    assert kinds.index(EnsureBridge) < kinds.index(EnsureVxlan) < kinds.index(EnsureVeth) < kinds.index(SyncPeers)
    vx = next(a for a in actions if isinstance(a, EnsureVxlan))
    assert (vx.spec.vni, vx.spec.local, vx.spec.master, vx.spec.mtu) == (4097, LOCAL, "ov-" + NET_ID[:12], 1450)
    br = next(a for a in actions if isinstance(a, EnsureBridge))
    assert br.spec.mac == bridge_mac(NET_ID, "n1") != bridge_mac(NET_ID, "n2")
    veth = next(a for a in actions if isinstance(a, EnsureVeth))
    assert veth.spec.gateway4 is None  # no default route through the overlay
    assert next(a for a in actions if isinstance(a, SyncPeers)).peers == (PEER,)


def _in_sync_host() -> ObservedHost:
    br = _link("ov-" + NET_ID[:12], "bridge", 5)
    host = ObservedHost(bridges={NET_ID: br}, by_name={br.ifname: br}, by_index={5: br})
    return host


def _vx() -> ObservedVxlan:
    return ObservedVxlan(
        index=6,
        ifname="vx-" + NET_ID[:12],
        owner=NET_ID,
        alias="netd:" + NET_ID,
        vni=4097,
        port=4789,
        local=LOCAL,
        group=None,
        learning=False,
        proxy=True,
        l2miss=False,
        l3miss=False,
        mtu=1450,
        up=True,
        master=5,
    )


def test_entries_in_sync_plan_nothing_and_a_new_peer_is_one_sync() -> None:
    st = _state(with_endpoint=False)
    st.endpoints.clear()
    seen = _seen(
        vxlan={NET_ID: _vx()},
        peers={NET_ID: [PEER]},
        entries={
            NET_ID: ObservedEntries((FdbEntry(PEER.mac, PEER.vtep),), (NeighEntry(PEER.addresses[0], PEER.mac),))
        },
    )
    assert _plan(st, _in_sync_host(), seen, Scope.of(networks=[NET_ID])) == []
    other = PeerEntry(mac="02:42:0a:00:09:04", addresses=(IPv4Address("10.0.9.4"),), vtep=IPv4Address("192.0.2.3"))
    seen.peers[NET_ID].append(other)
    actions = _plan(st, _in_sync_host(), seen, Scope.of(networks=[NET_ID]))
    assert [type(a) for a in actions] == [SyncPeers] and "+1/-0 fdb" in actions[0].describe()  # type: ignore[attr-defined]


def test_without_local_endpoints_the_links_go() -> None:
    host = _in_sync_host()
    vx = _link("vx-" + NET_ID[:12], "vxlan", 6, master=5)
    host.by_name[vx.ifname] = vx
    actions = _plan(_state(with_endpoint=False), host, _seen(active=False), Scope.of(networks=[NET_ID]))
    dels = [a for a in actions if isinstance(a, DeleteLinks)]
    assert dels and set(dels[0].ifnames) == {"ov-" + NET_ID[:12], "vx-" + NET_ID[:12]}


def test_overlay_traffic_is_never_forwarded_elsewhere_and_not_masqueraded() -> None:
    rules = build_ruleset(_state())
    post = next(c for c in rules.ip.chains if c.hook == "postrouting")
    assert post.rules == ()  # no masquerade: the way out is docker_gwbridge
    from_chain = next(c for c in rules.ip.chains if c.name.startswith("from-"))
    assert [type(r.verdict).__name__ for r in from_chain.rules] == ["Drop"]
    f = get_driver(_net()).features(_net())
    assert (f.scope, f.routed, f.nat, f.published_ports, f.dns) == ("swarm", False, False, False, True)


def test_options_and_macs() -> None:
    assert parse_vni({"com.docker.network.driver.overlay.vxlanid_list": "4097"}) == 4097
    for bad in ("0", "16777216", "x", "1,2"):
        with pytest.raises(InvalidError, match="vxlanid_list"):
            parse_vni({"com.docker.network.driver.overlay.vxlanid_list": bad})
    assert overlay_mac(IPv4Address("10.0.9.2")) == "02:42:0a:00:09:02"
    with pytest.raises(InvalidError, match="not attachable"):
        get_driver("overlay").check_connect(_net().model_copy(update={"attachable": False}), DesiredState())
