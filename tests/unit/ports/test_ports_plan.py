"""Published ports, pure side: request parsing, conflicts and host-port allocation (no root)."""

from __future__ import annotations

from typing import Any

import pytest
from port_states import pm

from netd.core.errors import ConflictError, InvalidError
from netd.core.ports import (
    Holder,
    binds,
    check_families,
    clash_filter,
    describe,
    overlaps,
    parse_port_range,
    plan_ports,
)
from netd.core.request import parse_connect

BOTH = frozenset({4, 6})
V4 = frozenset({4})


def parse(*ports: dict[str, Any]) -> list[Any]:
    return parse_connect({"Netns": "web", "Ports": list(ports)}).ports


def test_parse_every_field() -> None:
    (m,) = parse({"HostIp": "[::1]", "HostPort": 8080, "ContainerPort": 80, "Proto": "UDP"})
    assert (str(m.host_ip), m.host_port, m.container_port, m.proto) == ("::1", 8080, 80, "udp")
    (auto,) = parse({"HostPort": 0, "ContainerPort": 80})
    assert (auto.host_ip, auto.host_port, auto.proto) == (None, 0, "tcp")
    assert parse_connect({"Netns": "web"}).ports == []


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"HostPort": 80}, "ContainerPort None"),
        ({"HostPort": 80, "ContainerPort": 0}, "1-65535"),
        ({"HostPort": 65536, "ContainerPort": 80}, "0-65535"),
        ({"HostPort": True, "ContainerPort": 80}, "HostPort True"),
        ({"HostPort": 80, "ContainerPort": 80, "Proto": "icmp"}, "tcp, udp, sctp"),
        ({"HostIp": "10.0.0.300", "HostPort": 80, "ContainerPort": 80}, "not an IP address"),
        ({"HostIp": "10.0.0.1/24", "HostPort": 80, "ContainerPort": 80}, "not an IP address"),
        ({"HostPort": 80, "ContainerPort": 80, "Extra": 1}, "unknown field 'Extra'"),
    ],
)
def test_parse_rejects_with_field_and_reason(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidError, match="Ports\\[0\\]") as info:
        parse(entry)
    assert info.value.field == "publish" and words in info.value.message


def test_ports_must_be_a_list() -> None:
    with pytest.raises(InvalidError, match="must be a list"):
        parse_connect({"Netns": "web", "Ports": {"HostPort": 80}})


def test_binds_and_overlap() -> None:
    assert binds(pm(80, 80), BOTH) == {(4, None), (6, None)}
    assert binds(pm(80, 80), V4) == {(4, None)}
    assert binds(pm(80, 80, ip="0.0.0.0"), BOTH) == {(4, None)}
    assert overlaps(binds(pm(80, 80, ip="127.0.0.1"), V4), binds(pm(80, 80, ip="0.0.0.0"), V4))
    assert not overlaps(binds(pm(80, 80, ip="127.0.0.1"), V4), binds(pm(80, 80, ip="10.0.0.1"), V4))
    assert not overlaps(binds(pm(80, 80, ip="0.0.0.0"), V4), binds(pm(80, 80, ip="::"), BOTH))
    assert overlaps(binds(pm(80, 80), BOTH), binds(pm(80, 80, ip="::1"), BOTH))


def test_conflict_names_the_holder_and_protocols_are_separate() -> None:
    holders = [Holder(pm(8080, 80), BOTH, "netns 'web' on network 'app'")]
    with pytest.raises(ConflictError, match="already published by netns 'web' on network 'app'") as info:
        plan_ports([pm(8080, 90, ip="127.0.0.1")], V4, holders)
    assert info.value.field == "publish"
    assert plan_ports([pm(8080, 90, "udp")], V4, holders) == [pm(8080, 90, "udp")]
    # a v4-only holder leaves the IPv6 addresses free
    assert plan_ports([pm(8080, 90, ip="::")], BOTH, [Holder(pm(8080, 80), V4, "x")]) == [pm(8080, 90, ip="::")]
    with pytest.raises(ConflictError, match="this request"):
        plan_ports([pm(9000, 1), pm(9000, 2)], V4, [])


def test_automatic_ports_are_the_lowest_free_and_avoid_explicit_ones() -> None:
    holders = [Holder(pm(100, 1), V4, "a"), Holder(pm(101, 1, "udp"), V4, "b")]
    out = plan_ports([pm(0, 80), pm(0, 81, "udp"), pm(102, 82)], V4, holders, (100, 110))
    assert [(m.host_port, m.container_port) for m in out] == [(101, 80), (100, 81), (102, 82)]
    # a specific address elsewhere does not block the wildcard's pick... but the wildcard blocks everything
    out = plan_ports([pm(0, 80, ip="127.0.0.1")], V4, [Holder(pm(100, 1, ip="10.0.0.1"), V4, "c")], (100, 100))
    assert out[0].host_port == 100


def test_range_exhaustion_is_a_conflict_naming_the_setting() -> None:
    with pytest.raises(ConflictError, match="published_port_range 100-100"):
        plan_ports([pm(0, 80), pm(0, 81)], V4, [], (100, 100))


def test_host_address_family_must_exist_on_the_endpoint() -> None:
    with pytest.raises(InvalidError, match="no IPv6 address"):
        check_families([pm(80, 80, ip="::1")], V4, "app")
    check_families([pm(80, 80, ip="::1"), pm(81, 81)], BOTH, "app")


def test_parse_port_range_and_describe() -> None:
    assert parse_port_range("49153-60999") == (49153, 60999)
    assert parse_port_range("8080") == (8080, 8080)
    for bad in ("0-10", "10-5", "a-b", "1-70000"):
        with pytest.raises(ValueError):
            parse_port_range(bad)
    assert describe(pm(8080, 80, ip="::1")) == "[::1]:8080->80/tcp"
    assert describe(pm(8080, 80, "udp")) == "*:8080->80/udp"


def test_clash_filter_keeps_every_holder_that_changes_the_plan() -> None:
    """Planning against the filtered holders gives what planning against all of them does (the service hands
    plan_ports only those: a connect at 1000 published ports walked them all)."""
    fams = frozenset({4, 6})
    low = range(49153, 49163)  # the bottom of the default range: the picks must skip them
    holders = [Holder(pm(p, 80, proto), fams, f"h{p}{proto}") for p in low for proto in ("tcp", "udp")]
    holders += [Holder(pm(8080, 80), fams, "web"), Holder(pm(8081, 81, "udp"), fams, "dns")]
    for wanted in ([pm(8080, 1)], [pm(8081, 1, "udp")], [pm(0, 1)], [pm(0, 1, "udp"), pm(9000, 2)], [pm(9000, 3)]):
        keep = clash_filter(wanted)
        kept = [h for h in holders if keep(h.mapping)]
        try:
            want: object = plan_ports(wanted, fams, holders)
        except ConflictError as e:
            want = str(e)
        try:
            got: object = plan_ports(wanted, fams, kept)
        except ConflictError as e:
            got = str(e)
        assert got == want
    assert not clash_filter([pm(9000, 3)])(pm(8080, 80))
