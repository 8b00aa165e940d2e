"""The services' LB model, rule building and both renderers (pure; golden files for the rendered rules).

Rewrite the golden files after an intended rule change with ``NETD_UPDATE_GOLDEN=1 pytest tests/unit/firewall``
and review the diff.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from netd.core.errors import FirewallError
from netd.firewall import lb_iptables, lb_nft
from netd.firewall.lb import removed_targets
from netd.firewall.lb_model import (
    Backend,
    Endpoint,
    LbInputError,
    LbNode,
    LbRuleset,
    PortSpec,
    Service,
    assign_slots,
    build_lb,
)

GOLDEN = Path(__file__).parent / "golden"
NODE = LbNode("n1", ingress_network="ingress")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NETD_UPDATE_GOLDEN") == "1":
        path.write_text(text)
        return
    assert path.exists(), f"{path} missing: run with NETD_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"rendering differs from {path}; if intended, rerun with NETD_UPDATE_GOLDEN=1"


def full(rs: LbRuleset, token: str) -> str:
    return lb_nft.render_full(rs, assign_slots(None, rs), token)


def delta(old: LbRuleset, new: LbRuleset, token: str) -> str:
    before = assign_slots(None, old)
    return lb_nft.render_delta(old, before, new, assign_slots(before, new), token)


def tasks(n: int, *, first: int = 10, node_of: dict[int, str] | None = None) -> tuple[Backend, ...]:
    out: list[Backend] = []
    for i in range(first, first + n):
        node = (node_of or {}).get(i, "n1" if i % 2 == 0 else "n2")
        out.append(Backend(f"t{i}", IPv4Address("10.0.9.0") + i, "front", node))
        out.append(Backend(f"t{i}", IPv4Address("10.255.0.0") + i, "ingress", node))
    return tuple(out)


def web(n: int = 3, **kw: object) -> Service:
    ports = (PortSpec("tcp", 8080, 80), PortSpec("udp", 5353, 53), PortSpec("tcp", 8081, 81, "host"))
    args: dict[str, object] = {
        "vips": (("front", IPv4Address("10.0.9.2")), ("ingress", IPv4Address("10.255.0.5"))),
        "ports": ports,
        "backends": tasks(n),
    }
    args.update(kw)
    return Service("web", **args)  # type: ignore[arg-type]


def representative() -> LbRuleset:
    sticky = Service(
        "db",
        (("front", IPv4Address("10.0.9.3")),),
        (PortSpec("tcp", None, 5432),),
        stickiness="source-ip",
        backends=(Backend("d1", IPv4Address("10.0.9.50"), "front", "n2"),),
    )
    rr = Service("dns", (("front", IPv4Address("10.0.9.4")),), (PortSpec("udp", 53, 53),), endpoint_mode="dnsrr")
    return build_lb([web(), sticky, rr], NODE)


# ------------------------------------------------------------------------------------------------ goldens


def test_golden_nft_full() -> None:
    check_golden("lb_representative.nft", full(representative(), "TOKEN"))


def test_golden_iptables_full() -> None:
    rs = build_lb([web()], NODE)
    check_golden("lb_representative.iptables", lb_iptables.render_full(rs, "TOKEN", ""))


def test_golden_nft_delta_one_task_joins() -> None:
    old, new = build_lb([web(3)], NODE), build_lb([web(4)], NODE)
    check_golden("lb_task_joins.nft", delta(old, new, "TOKEN"))


def test_golden_iptables_delta_one_task_leaves() -> None:
    old, new = build_lb([web(3)], NODE), build_lb([web(2)], NODE)
    check_golden("lb_task_leaves.iptables", lb_iptables.render_delta(old, new, "TOKEN"))


# ------------------------------------------------------------------------------------------------ building


def test_vip_mesh_and_host_ports() -> None:
    rs = build_lb([web()], NODE)
    assert rs.vips[(IPv4Address("10.0.9.2"), "tcp", 80)] == "vip-web-front-tcp-80"
    assert rs.vips[(IPv4Address("10.0.9.2"), "tcp", 81)] == "vip-web-front-tcp-81"
    assert rs.published == {
        ("tcp", 8080): "mesh-web-tcp-8080",
        ("udp", 5353): "mesh-web-udp-5353",
        ("tcp", 8081): "host-web-tcp-8081",
    }
    mesh = rs.spreads["mesh-web-tcp-8080"]
    assert [str(e.address) for e in mesh.endpoints] == ["10.255.0.10", "10.255.0.11", "10.255.0.12"]
    assert mesh.masquerade and not mesh.sticky
    host = rs.spreads["host-web-tcp-8081"]  # only this node's tasks (t10, t12), by their first network
    assert [str(e.address) for e in host.endpoints] == ["10.0.9.10", "10.0.9.12"] and not host.masquerade


def test_node_without_a_task_still_answers_the_mesh_but_not_host_ports() -> None:
    rs = build_lb([web(3)], LbNode("n9", ingress_network="ingress"))
    assert ("tcp", 8080) in rs.published and ("tcp", 8081) not in rs.published


def test_dnsrr_has_no_vip_but_publishes() -> None:
    rs = build_lb([web(endpoint_mode="dnsrr")], NODE)
    assert not rs.vips and ("tcp", 8080) in rs.published


def test_service_without_tasks_has_no_rules() -> None:
    assert build_lb([web(0)], NODE).empty


def test_stickiness_renders_jhash_on_the_source() -> None:
    batch = full(build_lb([web(stickiness="source-ip")], NODE), "T")
    assert "jhash ip saddr mod 3 seed 0x6e657464 vmap @vip-web-front-tcp-80-slots" in batch
    assert "numgen random" not in batch.replace("typeof numgen random", "")


@pytest.mark.parametrize(
    ("svc", "field"),
    [
        (web(ports=(PortSpec("tcp", 80, 80), PortSpec("tcp", 80, 81))), "ports.published"),
        (web(ports=(PortSpec("sctp", 80, 80),)), "ports.proto"),  # type: ignore[arg-type]
        (web(ports=(PortSpec("tcp", 80, 80, "global"),)), "ports.mode"),  # type: ignore[arg-type]
        (web(ports=(PortSpec("tcp", 70000, 80),)), "ports.published"),
        (web(endpoint_mode="round-robin"), "endpoint_mode"),
        (web(stickiness="cookie"), "stickiness"),
        (web(vips=()), "networks"),
        (web(backends=(Backend("x", IPv4Address("10.9.9.9"), "elsewhere", "n1"),)), "backends.network"),
        (Service("bad name", (("front", IPv4Address("10.0.9.2")),), ()), "name"),
    ],
)
def test_bad_input_names_the_field(svc: Service, field: str) -> None:
    with pytest.raises(LbInputError) as err:
        build_lb([svc], NODE)
    assert err.value.field == field


def test_port_published_by_two_services_is_refused() -> None:
    other = Service("api", (("front", IPv4Address("10.0.9.7")),), (PortSpec("tcp", 8080, 80),))
    with pytest.raises(LbInputError, match="already published by service api"):
        build_lb([web(), other], NODE)


# ------------------------------------------------------------------------------------------------ deltas


def many(n: int) -> list[Service]:
    return [
        Service(
            f"s{i}",
            (
                ("front", IPv4Address(f"10.1.{i // 250}.{i % 250 + 1}")),
                ("ingress", IPv4Address(f"10.2.{i // 250}.{i % 250 + 1}")),
            ),
            (PortSpec("tcp", 20000 + i, 80),),
            backends=tasks(3, first=100),
        )
        for i in range(n)
    ]


def test_delta_size_follows_the_change_not_the_ruleset() -> None:
    small = delta(build_lb([web(3)], NODE), build_lb([web(4)], NODE), "T")
    old, new = build_lb([web(3), *many(500)], NODE), build_lb([web(4), *many(500)], NODE)
    assert delta(old, new, "T") == small
    assert full(new, "T").count("\n") > 50 * small.count("\n")
    ipt_small = lb_iptables.render_delta(build_lb([web(3)], NODE), build_lb([web(4)], NODE), "T")
    ipt = lb_iptables.render_delta(old, new, "T")
    assert ipt.count("\n") == ipt_small.count("\n")  # the dispatch chain does not change when only tasks do


def test_slots_are_kept_a_leaving_task_gives_its_slot_to_the_last() -> None:
    old = build_lb([web(5)], NODE)
    before = assign_slots(None, old)
    spread = "vip-web-front-tcp-80"
    assert [str(e.address) for e in before[spread]] == [f"10.0.9.{i}" for i in range(10, 15)]
    gone_11 = Service("web", web().vips, web().ports, backends=tuple(b for b in tasks(5) if b.task != "t11"))
    after = assign_slots(before, build_lb([gone_11], NODE))
    assert [str(e.address) for e in after[spread]] == ["10.0.9.10", "10.0.9.14", "10.0.9.12", "10.0.9.13"]
    again = assign_slots(after, build_lb([web(5)], NODE))  # t11 comes back: appended, nothing else moves
    assert [str(e.address) for e in again[spread]] == [
        "10.0.9.10",
        "10.0.9.14",
        "10.0.9.12",
        "10.0.9.13",
        "10.0.9.11",
    ]


def test_adding_the_1000th_task_is_as_small_as_adding_the_10th() -> None:
    def size(n: int) -> int:
        return len(delta(build_lb([web(n - 1)], NODE), build_lb([web(n)], NODE), "T"))

    assert size(1000) < size(10) * 1.2  # the same commands; only longer addresses and slot numbers


def test_delta_of_a_leaving_task_deletes_its_chain_after_the_spreads_stop_naming_it() -> None:
    lines = delta(build_lb([web(3)], NODE), build_lb([web(2)], NODE), "T").splitlines()
    unslotted = [i for i, line in enumerate(lines) if line.startswith("delete element ip netd-lb vip-")]
    deletes = [i for i, line in enumerate(lines) if line.startswith("delete chain")]
    gone = {lines[i].split()[-1] for i in deletes}
    assert gone == {
        "ep-10.0.9.12-tcp-80",
        "ep-10.0.9.12-tcp-81",
        "ep-10.0.9.12-udp-53",
        "ep-10.255.0.12-tcp-80",
        "ep-10.255.0.12-tcp-81",
        "ep-10.255.0.12-udp-53",
    }
    assert unslotted and max(unslotted) < min(deletes)
    assert removed_targets(build_lb([web(3)], NODE), build_lb([web(2)], NODE))[0].address == IPv4Address(
        "10.0.9.12"
    )


def test_delta_removing_a_service() -> None:
    lines = delta(build_lb([web()], NODE), LbRuleset(), "T").splitlines()
    assert any(line.startswith("delete element ip netd-lb vips") for line in lines)
    assert any(line.startswith("delete map ip netd-lb vip-web-front-tcp-80-slots") for line in lines)
    assert [line for line in lines if line.startswith("add rule")] == [lines[-1]]  # only the new token


# ------------------------------------------------------------------------------------------------ iptables


def test_iptables_spread_is_even() -> None:
    text = lb_iptables.render_full(build_lb([web(3)], NODE), "T", "")
    chain = lb_iptables.chain_name("vip-web-front-tcp-80", "S")
    lines = [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]
    assert "--probability 0.33333333333" in lines[1] and "--probability 0.50000000000" in lines[2]
    assert "statistic" not in lines[3] and len(lines) == 4


def test_iptables_refuses_stickiness_clearly() -> None:
    with pytest.raises(FirewallError, match="stickiness=source-ip needs the nftables backend"):
        lb_iptables.render_full(build_lb([web(stickiness="source-ip")], NODE), "T", "")


def test_iptables_full_prunes_stale_chains_and_keeps_existing_jumps() -> None:
    saved = "*nat\n:NETDLB-PRE - [0:0]\n:NETDLB-S-OLD - [0:0]\n-A PREROUTING -j NETDLB-PRE\nCOMMIT\n"
    text = lb_iptables.render_full(build_lb([web()], NODE), "T", saved)
    assert "-X NETDLB-S-OLD" in text and "-I PREROUTING" not in text and "-I OUTPUT 1 -j NETDLB-PRE" in text
    assert lb_iptables.render_removal(saved).splitlines()[1] == "-D PREROUTING -j NETDLB-PRE"


def test_tokens_read_back() -> None:
    saved = '-A NETDLB-STATE -m comment --comment "netd-lb:abc123" -j RETURN\n'
    assert lb_iptables.token_of(saved) == "abc123"
    listing: dict[str, object] = {
        "nftables": [{"metainfo": {}}, {"rule": {"chain": "lb-state", "comment": "netd-lb:abc123"}}]
    }
    assert lb_nft.token_of(listing) == "abc123" and lb_nft.token_of({"nftables": []}) is None


def test_endpoint_chain_names_fit_iptables() -> None:
    ep = Endpoint(IPv4Address("255.255.255.255"), "tcp", 65535)
    assert len(lb_iptables.chain_name(ep.chain, "E")) <= 28
