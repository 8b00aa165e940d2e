"""Published ports in the firewall: the rule model, both renderings (golden files) and the UDP change set.

Goldens live beside the other firewall goldens (tests/unit/firewall/golden); rewrite them after an intended
change with ``NETD_UPDATE_GOLDEN=1 pytest tests/unit/ports`` and review the diff.
"""

from __future__ import annotations

import json
import os
from ipaddress import ip_network
from pathlib import Path

from port_states import ep, pm, ports_state

from netd.core.ruleset import DNAT_MAPS, Accept, DnatMap, Masquerade, Match
from netd.firewall.iptables_render import render_chains, render_restore
from netd.firewall.nft_render import render_nft_delta, render_nft_json, ruleset_digest
from netd.firewall.nft_sync import expected_summaries
from netd.firewall.rules import build_ruleset, udp_changes

GOLDEN = Path(__file__).resolve().parents[1] / "firewall" / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NETD_UPDATE_GOLDEN") == "1":
        path.write_text(text)
        return
    assert path.exists(), f"{path} missing: run with NETD_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"rendering differs from {path}; if intended, rerun with NETD_UPDATE_GOLDEN=1"


def test_golden_nft() -> None:
    batch = render_nft_json(build_ruleset(ports_state()))
    lines = ",\n".join(json.dumps(c) for c in batch["nftables"])  # one command per line: one-line diffs
    check_golden("ports.nft.json", '{"nftables": [\n' + lines + "\n]}\n")


def test_golden_iptables() -> None:
    rs = build_ruleset(ports_state())
    for fam in ("ipv4", "ipv6"):
        check_golden(f"ports.{fam}.iptables", render_restore(render_chains(rs, fam), {}))


def test_one_map_element_per_mapping_and_family() -> None:
    rs = build_ruleset(ports_state())
    sets = {s.name: s for s in rs.ip.sets}
    assert [e.key for e in sets["dnat4"].elements] == [("127.0.0.1", "udp", "8081")]
    assert {e.key: e.value for e in sets["dnat4_any"].elements} == {
        ("tcp", "5432"): ("10.90.2.2", "5432"),
        ("tcp", "8080"): ("10.90.1.2", "80"),
    }
    assert [e.key for e in sets["dnat6"].elements] == [("fd99:255::1", "sctp", "8083")]
    # no HostIp: both families of the dual-stack endpoint; "::": IPv6 only
    assert [e.key for e in sets["dnat6_any"].elements] == [("tcp", "8080"), ("tcp", "8082")]
    published = rs.ip.chain("published")
    assert [r.verdict for r in published.rules] == [
        DnatMap(name, "ip" if v == 4 else "ip6", by_daddr) for (v, by_daddr), name in DNAT_MAPS.items()
    ]
    assert rs.ip.chain("prerouting").rules[0].match == Match(fib_local=True)
    assert rs.ip.chain("output").hook == "output"


def test_adding_a_mapping_changes_only_map_elements() -> None:
    st = ports_state()
    before = build_ruleset(st)
    st.endpoints["pg"].ports.append(pm(5433, 5433, "udp"))
    after = build_ruleset(st)
    assert after.ip.chains == before.ip.chains  # no chain (and no rule) per mapping
    assert sum(len(s.elements) for s in after.ip.sets) == sum(len(s.elements) for s in before.ip.sets) + 1


def test_published_networks_accept_dnat_and_masquerade_loopback_and_hairpin() -> None:
    rs = build_ruleset(ports_state())
    to_a = rs.ip.chain("to-a1b2c3d4e5f6").rules
    assert (to_a[-2].match, to_a[-2].verdict) == (Match(ct_dnat=True), Accept())
    assert not any(r.match.ct_dnat for r in rs.ip.chain("to-c3d4e5f6a7b8").rules)  # internal: nothing
    nat = [(r.match, r.verdict) for r in rs.ip.chain("postrouting").rules if r.comment == "netd:a1b2c3d4e5f6"]
    assert (Match(saddr=ip_network("127.0.0.0/8"), oif="br-a"), Masquerade()) in nat
    assert (Match(ct_dnat=True, saddr=ip_network("fd00:90:1::/64"), oif="br-a"), Masquerade()) in nat


def test_no_published_port_no_dnat_objects() -> None:
    st = ports_state()
    for e in st.endpoints.values():
        e.ports = []
    rs = build_ruleset(st)
    assert {c.name for c in rs.ip.chains}.isdisjoint({"prerouting", "output", "published"})
    assert not any(s.name.startswith("dnat") for s in rs.ip.sets)


def test_internal_network_ports_are_never_rendered() -> None:
    st = ports_state()
    st.endpoints["db"] = ep("db", "c3d4e5f6a7b8", "10.90.3.2/24", None, pm(6000, 6000))
    assert build_ruleset(st) == build_ruleset(ports_state())


def test_nft_splits_concatenated_maps_and_counts_them() -> None:
    inet = expected_summaries(render_nft_json(build_ruleset(ports_state())))["inet"]
    sets = dict(inet.sets)
    assert sets["dnat4_any_addr"] == sets["dnat4_any_port"] == 2
    assert "dnat4_any" not in sets


def test_udp_changes() -> None:
    st = ports_state()
    old = build_ruleset(st)
    assert udp_changes(old, old) == []
    st.endpoints["web"].ports = [p for p in st.endpoints["web"].ports if p.proto != "udp"]
    st.endpoints["pg"].ports.append(pm(53, 53, "udp"))
    new = build_ruleset(st)
    assert udp_changes(old, new) == [(4, "127.0.0.1", 8081), (4, None, 53)]
    # pointing elsewhere is a change too
    st.endpoints["pg"].ports = [pm(53, 54, "udp")]
    assert udp_changes(new, build_ruleset(st)) == [(4, None, 53)]


def test_nft_delta_touches_only_changed_elements_and_restamps_markers() -> None:
    st = ports_state()
    old = build_ruleset(st)
    st.endpoints["pg"].ports.append(pm(5433, 5433, "udp"))
    st.endpoints["web"].ports = [p for p in st.endpoints["web"].ports if p.host_port != 8082]
    new = build_ruleset(st)
    full = render_nft_json(new)
    answer = render_nft_delta(old, new, ruleset_digest(old))
    assert answer is not None
    delta, digest = answer
    assert digest == ruleset_digest(new)  # updated by the changed elements only, equal to the full hash
    verbs = [(next(iter(c)), next(iter(next(iter(c.values()))))) for c in delta["nftables"]]
    assert verbs == [("delete", "element")] * 2 + [("add", "element")] * 2 + [("flush", "chain"), ("add", "rule")]
    names = {c[v]["element"]["name"] for c in delta["nftables"] for v in c if "element" in c[v]}
    assert names == {"dnat6_any_addr", "dnat6_any_port", "dnat4_any_addr", "dnat4_any_port"}
    assert delta["nftables"][-1]["add"]["rule"]["comment"] == "netd:ruleset:" + str(
        expected_summaries(full)["inet"].marker
    )
    assert render_nft_delta(new, new, digest) is None  # nothing changed: the caller replaces (a repair)
    st.endpoints["plain"].ports = [pm(7000, 7000)]  # same network as pg: still elements only
    answer = render_nft_delta(new, build_ruleset(st), digest)
    assert answer is not None and answer[1] == ruleset_digest(build_ruleset(st))
    st.endpoints["web"].ports = []  # front stops publishing: its chains change, so a full replacement
    assert render_nft_delta(new, build_ruleset(st), digest) is None
