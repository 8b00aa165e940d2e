"""Services' data plane, pure parts: the LB rules of one namespace and the resolver's service names."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

from netd.cluster.cache import Change
from netd.cluster.keys import KeyLayout
from netd.cluster.records import EndpointRecord, ServicePort, ServiceRecord
from netd.multihost.service_dns import service_names
from netd.multihost.service_lb import namespace_lb, touches_services

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
