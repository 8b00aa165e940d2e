"""The one driver interface: every kind implements it, and the planner, the rule builder and DNS go only
through it (a driver with other features or extra actions changes what they do without any change to them)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import pytest
from samples import NET_ID, one_endpoint_state

from netd.core.actions import Action, DriverAction, Observed, Scope, describe
from netd.core.errors import ConflictError, InvalidError
from netd.core.linkspec import ObservedHost, ObservedLink
from netd.core.model import DesiredState, Network
from netd.dns.answer import has_resolver
from netd.drivers import DRIVERS, get_driver, parse_network_create
from netd.drivers.base import Features, NetworkDriver
from netd.drivers.bridge import Bridge
from netd.engine.plan import plan, scope_links
from netd.firewall.rules import build_ruleset


def _members(proto: type) -> set[str]:
    return {n for n, _ in inspect.getmembers(proto) if not n.startswith("_")} | set(proto.__annotations__)


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_every_driver_implements_the_whole_interface(name: str) -> None:
    drv = DRIVERS[name]
    missing = {m for m in _members(NetworkDriver) if not hasattr(drv, m)}
    assert not missing, f"{name} lacks {missing}"
    assert drv.name == name and get_driver(name) is drv
    for member in _members(NetworkDriver) - {"name", "options"}:
        assert callable(getattr(drv, member)), member


def test_unknown_driver_and_foreign_options_are_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidError, match="unknown driver 'vxlan'; supported: bridge, macvlan, ipvlan, overlay"):
        parse_network_create({"Name": "n", "Driver": "vxlan"})
    with pytest.raises(InvalidError, match="unknown option 'parent' for driver bridge"):
        parse_network_create({"Name": "n", "Options": {"parent": "eth0"}})


def _host(*links: ObservedLink) -> ObservedHost:
    return ObservedHost(by_name={lk.ifname: lk for lk in links}, by_index={lk.index: lk for lk in links})


def _link(name: str, kind: str) -> ObservedLink:
    return ObservedLink(index=7, ifname=name, kind=kind, owner=None, mtu=1500, up=True, master=None, mac="")


def test_bridge_driver_adopts_a_foreign_bridge_and_refuses_another_kind_of_link() -> None:
    _, opts = parse_network_create({"Name": "n", "Options": {"com.docker.network.bridge.name": "br0"}})
    base = Network(id="b" * 64, name="n", bridge="")
    drv = get_driver("bridge")
    assert list(drv.create_observes(base, opts) or ()) == ["br0"]
    net = drv.build_network(base, opts, _host(_link("br0", "bridge")), DesiredState())
    assert (net.bridge, net.bridge_adopted, net.icc, net.masquerade) == ("br0", True, True, True)
    assert not drv.build_network(base, opts, _host(), DesiredState()).bridge_adopted
    with pytest.raises(ConflictError, match="br0 exists and is a veth, not a bridge"):
        drv.build_network(base, opts, _host(_link("br0", "veth")), DesiredState())


def test_endpoint_links_come_from_the_driver() -> None:
    st = one_endpoint_state()
    net = st.networks["app"]
    drv = get_driver(net)
    assert drv.endpoint_host_ifname("e" * 64).startswith("veth") and drv.endpoint_mac(net, "e" * 64, None)
    assert scope_links(st, Scope.of(networks=[NET_ID])) == {"br-app"}


# -- a driver with other features and its own actions (what overlay will be) ---------------------------------


@dataclass(frozen=True)
class AddFdb(DriverAction):
    mac: str
    dst: str
    owner: str

    def describe(self) -> str:
        return f"fdb {self.mac} -> {self.dst}"

    async def apply(self, kernel: Any) -> None:
        await kernel.add_fdb(self.mac, self.dst)


class Segment(Bridge):
    """A bridge-based kind without NAT or published ports and with its own FDB entries."""

    def features(self, net: Network) -> Features:
        return Features(filtered=True, nat=False, published_ports=False, dns=False)

    async def observe_extra(self, kernel: Any, desired: DesiredState, scope: Scope) -> Any:
        return set(kernel.fdb)

    def plan_extra(self, desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]:
        have = observed.extra.get(self.name, set())
        want = {("02:42:0a:00:00:09", "192.0.2.9")}
        return [AddFdb(mac, dst, owner=NET_ID) for mac, dst in sorted(want - have)]


def test_a_new_kind_changes_firewall_dns_and_plan_without_touching_them(monkeypatch: pytest.MonkeyPatch) -> None:
    st = one_endpoint_state()
    net = st.networks["app"]
    before = build_ruleset(st)
    assert has_resolver(net) and "Masquerade()" in repr(before)
    monkeypatch.setitem(DRIVERS, "bridge", Segment())
    after = build_ruleset(st)
    assert "Masquerade()" not in repr(after) and "to-" in repr(after)  # still filtered, no NAT
    assert not has_resolver(net)
    obs = Observed(host=ObservedHost(), netns_alive={"web"}, netns_owned={"web"})
    actions = plan(st, obs, ns_path=lambda ep: f"/run/netns/{ep.netns}", ip_forward=False)
    fdb = [a for a in actions if isinstance(a, AddFdb)]
    assert [describe(a) for a in fdb] == ["fdb 02:42:0a:00:00:09 -> 192.0.2.9"]
    obs.extra["bridge"] = {("02:42:0a:00:00:09", "192.0.2.9")}
    assert not [a for a in plan(st, obs, ns_path=lambda ep: "", ip_forward=False) if isinstance(a, AddFdb)]
