"""Services' data plane, pure parts: the LB rules of one namespace and the resolver's service names."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from netd.cluster.cache import Change
from netd.cluster.keys import KeyLayout
from netd.cluster.records import EndpointRecord, ServicePort, ServiceRecord
from netd.core.model import DesiredState, Endpoint, Network
from netd.firewall.lb import LbChange
from netd.firewall.lb_model import LbRuleset
from netd.multihost.service_dns import service_names
from netd.multihost.service_lb import ServiceLb, namespace_lb, touches_services

WEB = ServiceRecord(
    id="s1",
    name="web",
    networks=["n1", "n2"],
    vips={"n1": IPv4Address("10.1.0.2"), "n2": IPv4Address("10.2.0.2")},
    ports=[ServicePort(target=80, published=8080), ServicePort(target=80, published=8081, mode="host")],
)
RR = ServiceRecord(id="s2", name="rr", networks=["n1"], endpoint_mode="dnsrr", ports=[ServicePort(target=53)])


def task(i: int, node: str, net: str = "n1", service: str = "web") -> EndpointRecord:
    sub = "10.1.0" if net == "n1" else "10.2.0"
    return EndpointRecord(
        id=f"e{i}",
        network=net,
        node=node,
        name=f"t{i}",
        mac="02:42:00:00:00:00",
        ipv4=IPv4Interface(f"{sub}.{10 + i}/24"),
        service=service,
        created=f"{i}",
    )


TASKS = [task(1, "a"), task(2, "b"), task(3, "c"), task(4, "b", "n2"), task(5, "a", service="rr")]
NAMES = {"n1": "ov1", "n2": "ov2"}


def test_a_namespace_gets_the_vips_of_its_networks_over_the_tasks_of_alive_nodes() -> None:
    rs = namespace_lb({"n1"}, NAMES, [WEB, RR], TASKS, {"a", "b"}, "a")
    # one VIP port (80 twice is one target), on n1 only; no routing mesh or host port in a namespace
    assert list(rs.vips) == [(IPv4Address("10.1.0.2"), "tcp", 80)] and not rs.published
    (spread,) = rs.spreads.values()
    assert [str(e.address) for e in spread.endpoints] == ["10.1.0.11", "10.1.0.12"]  # node c is not alive
    both = namespace_lb({"n1", "n2"}, NAMES, [WEB], TASKS, {"a", "b", "c"}, "a")
    assert len(both.vips) == 2 and sum(len(s.endpoints) for s in both.spreads.values()) == 4
    assert namespace_lb({"n9"}, NAMES, [WEB, RR], TASKS, {"a", "b"}, "a").empty
    sticky = WEB.model_copy(update={"stickiness": "source-ip"})
    assert namespace_lb({"n1"}, NAMES, [sticky], TASKS, {"a"}, "a").sticky()


def test_names_of_a_network() -> None:
    got = service_names("n1", {"web": WEB, "rr": RR}, TASKS, {"a", "b", "c"}, 24)
    names: dict[str, list[str]] = {}
    for n, v4, _ in got:
        for name in n:
            names.setdefault(name, []).append(str(v4.ip) if v4 else "")
    assert names == {
        "web": ["10.1.0.2"],
        "tasks.web": ["10.1.0.11", "10.1.0.12", "10.1.0.13"],
        "tasks.rr": ["10.1.0.15"],
        "rr": ["10.1.0.15"],
    }
    down = service_names("n1", {"web": WEB}, TASKS, {"a"}, 24)
    assert [str(v4.ip) for n, v4, _ in down if v4 and n == ["tasks.web"]] == ["10.1.0.11"]


def test_which_changes_touch_services() -> None:
    keys = KeyLayout()
    plain = task(1, "a").model_copy(update={"service": None})
    for rec, key, want in (
        (task(1, "a"), keys.endpoint("n1", "e1"), True),
        (plain, keys.endpoint("n1", "e1"), False),
        (WEB, keys.service("s1"), True),
    ):
        ch = Change(puts={key: rec}, parsed={key: keys.parse(key)})  # type: ignore[dict-item]
        assert touches_services(ch) is want


class FakeBackend:
    name = "fake"

    def __init__(self, path: str, log: list[tuple[str, str]]) -> None:
        self.path, self.log = path, log
        self.fail = ""

    async def apply(self, desired: LbRuleset) -> LbChange:
        if self.fail:
            raise RuntimeError(self.fail)
        self.log.append(("apply", self.path))
        return LbChange("full", 1, 0)

    async def in_sync(self, desired: LbRuleset) -> bool:
        return True

    async def remove_all(self) -> None:
        self.log.append(("remove", self.path))

    def close(self) -> None:
        self.log.append(("close", self.path))


def test_service_lb_follows_namespaces(tmp_path: Path) -> None:
    ns = tmp_path / "ns1"
    ns.write_text("")
    state = DesiredState(
        networks={"ov1": Network(id="n1", name="ov1", driver="overlay", bridge="")},
        endpoints={
            "c": Endpoint(
                id="c", network="n1", netns_path=str(ns), ifname="eth0", host_ifname="x", mac="02:42:00:00:00:01"
            )
        },
    )
    log: list[tuple[str, str]] = []
    backends: list[FakeBackend] = []

    def make(path: str) -> FakeBackend:
        backends.append(FakeBackend(path, log))
        return backends[-1]

    current = {"state": state}
    lb = ServiceLb(
        "a",
        lambda: current["state"],
        lambda ep: ep.netns_path or "",
        lambda: ({"web": WEB}, TASKS, {"a", "b"}),
        make,  # type: ignore[arg-type,return-value]
    )

    async def body() -> None:
        assert await lb.sync() == 1 and log == [("apply", str(ns))]
        assert await lb.sync() == 0  # unchanged: no kernel work
        # the namespace recreated at the same path (a reboot): a new backend bound to the new one
        fresh = tmp_path / "ns1.new"
        fresh.write_text("")
        fresh.rename(ns)
        log.clear()
        await lb.sync()
        assert log == [("close", str(ns)), ("apply", str(ns))] and len(backends) == 2
        # the namespace leaves the service's network: its table goes
        current["state"] = state.model_copy(update={"endpoints": {}})
        log.clear()
        await lb.sync()
        assert log == [("remove", str(ns)), ("close", str(ns))] and not lb.namespaces

    asyncio.run(body())
