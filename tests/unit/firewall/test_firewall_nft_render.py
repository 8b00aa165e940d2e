"""Golden-file and unit tests of the pure nftables JSON rendering (no root).

Rewrite the golden files after an intended rule change with ``NETD_UPDATE_GOLDEN=1 pytest tests/unit/firewall``
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fw_states import net, representative, state

from netd.firewall.nft_render import MARKER_CHAIN, MARKER_PREFIX, render_nft_json, ruleset_digest
from netd.firewall.nft_sync import TableSummary, expected_summaries, observed_summaries, summaries_of
from netd.firewall.rules import build_ruleset

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, data: Any) -> None:
    path = GOLDEN / name
    # one command per line: a rule change is a one-line diff
    text = '{"nftables": [\n' + ",\n".join(json.dumps(c) for c in data["nftables"]) + "\n]}\n"
    assert json.loads(text) == data
    if os.environ.get("NETD_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} missing: run with NETD_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"rendering differs from {path}; if intended, rerun with NETD_UPDATE_GOLDEN=1"


def test_golden_representative() -> None:
    check_golden("representative.nft.json", render_nft_json(build_ruleset(representative())))


def test_golden_ip_forward_off() -> None:
    st = state(net("a1b2c3d4e5f6", "br-a", "10.90.1.0/24"))
    check_golden("ip_forward_off.nft.json", render_nft_json(build_ruleset(st, ip_forward=False)))


def test_empty_state_renders_nothing() -> None:
    assert render_nft_json(build_ruleset(state())) == {"nftables": []}


def test_only_own_tables_are_named() -> None:
    batch = render_nft_json(build_ruleset(representative()))
    for cmd in batch["nftables"]:
        ((verb, body),) = cmd.items()
        ((kind, obj),) = body.items()
        assert obj.get("table", obj.get("name")) == "netd"
        assert obj["family"] in ("inet", "bridge")
        assert verb in ("add", "delete")
        if kind == "table":
            assert "flags" not in obj  # never "owner": rules must outlive the daemon


def test_replacement_is_add_delete_add_per_table() -> None:
    batch = render_nft_json(build_ruleset(representative()))["nftables"]
    heads = [
        (next(iter(c)), c[next(iter(c))].get("table", {}).get("family"))
        for c in batch
        if "table" in next(iter(c.values()))
    ]
    assert heads == [
        ("add", "inet"),
        ("delete", "inet"),
        ("add", "inet"),
        ("add", "bridge"),
        ("delete", "bridge"),
        ("add", "bridge"),
    ]


def test_bridge_table_only_when_icc_off() -> None:
    batch = render_nft_json(build_ruleset(state(net("n1", "br1", "10.1.0.0/24"))))
    assert set(expected_summaries(batch)) == {"inet"}


def test_bridge_rule_matches_ether_type_and_addresses_only() -> None:
    batch = render_nft_json(build_ruleset(state(net("n1", "br1", "10.1.0.0/24", icc=False))))
    rules = [
        c["add"]["rule"]
        for c in batch["nftables"]
        if "rule" in c.get("add", {})
        and c["add"]["rule"]["family"] == "bridge"
        and c["add"]["rule"]["chain"] == "forward"
    ]
    assert len(rules) == 1
    text = json.dumps(rules[0])
    assert '"ether", "field": "type"' in text
    assert "ibrname" not in text and "obrname" not in text  # CONFIG_NFT_BRIDGE_META is off on this kernel


def test_hash_changes_with_state_and_is_stable() -> None:
    def marker(st: Any) -> str | None:
        return expected_summaries(render_nft_json(build_ruleset(st)))["inet"].marker

    a = marker(representative())
    assert a == marker(representative())
    assert a != marker(state(net("n1", "br1", "10.1.0.0/24")))


def _listing_from_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """What `nft -j list table` would answer for a batch (objects without the add verbs)."""
    objs: list[dict[str, Any]] = [{"metainfo": {"json_schema_version": 1}}]
    for cmd in batch["nftables"]:
        if "add" in cmd:
            objs.append(cmd["add"])
    return {"nftables": objs}


def test_summaries_match_and_detect_drift() -> None:
    batch = render_nft_json(build_ruleset(representative()))
    expected = expected_summaries(batch)
    assert observed_summaries(_listing_from_batch(batch)) == expected
    inet = expected["inet"]
    assert ("to-a1b2c3d4e5f6", 4) in inet.chains
    assert ("bridges", 4) in inet.sets
    assert inet.marker is not None

    # a flushed chain
    listing = _listing_from_batch(batch)
    listing["nftables"] = [
        o for o in listing["nftables"] if not ("rule" in o and o["rule"]["chain"] == "to-a1b2c3d4e5f6")
    ]
    assert observed_summaries(listing) != expected
    # a flushed set
    listing = _listing_from_batch(batch)
    for o in listing["nftables"]:
        if "set" in o:
            o["set"].pop("elem", None)
    assert observed_summaries(listing) != expected
    # a different generation (same shape, other marker)
    listing = _listing_from_batch(batch)
    for o in listing["nftables"]:
        if "rule" in o and o["rule"]["chain"] == MARKER_CHAIN:
            o["rule"]["comment"] = MARKER_PREFIX + "0" * 16
    assert observed_summaries(listing) != expected
    # nothing at all (nft flush ruleset)
    assert observed_summaries({"nftables": []}) == {}


def test_summary_ignores_foreign_tables() -> None:
    listing = {
        "nftables": [
            {"table": {"family": "inet", "name": "foreign"}},
            {"chain": {"family": "inet", "table": "foreign", "name": "x"}},
        ]
    }
    assert observed_summaries(listing) == {}
    assert TableSummary((), (), None) == TableSummary((), (), None)


@pytest.mark.parametrize("kind", ["none", "nftables", "auto"])
def test_make_backend(kind: str) -> None:
    from netd.firewall.select import make_backend

    b = make_backend(kind)
    assert b.name == ("none" if kind == "none" else "nftables")
    assert b.describe()["backend"] == b.name


def test_choose_backend_says_why() -> None:
    from netd.firewall.select import choose_backend

    backend, why = choose_backend("auto")
    assert backend.name == "nftables" and why.startswith("auto: ")
    assert choose_backend("none")[1] == "configured: none"


def test_make_backend_unknown() -> None:
    from netd.core.errors import InvalidError
    from netd.firewall.select import make_backend

    with pytest.raises(InvalidError, match="unknown"):
        make_backend("pf")


def test_none_backend() -> None:
    import asyncio

    from netd.firewall.select import NoneBackend

    b = NoneBackend()
    rs = build_ruleset(representative())

    async def run() -> bool:
        await b.apply(rs)
        await b.remove_all()
        return await b.in_sync(rs)

    assert asyncio.run(run()) is True


def test_nft_errors_become_firewall_errors() -> None:
    """A refused transaction surfaces nft's own message plus what to do (fake context: no root needed)."""
    import asyncio

    from netd.core.errors import FirewallError
    from netd.firewall.nftables import NftablesBackend

    class Refusing:
        def json_cmd(self, json_root: dict[str, Any]) -> tuple[int, Any, str]:
            if "list" in json_root["nftables"][0]:
                return 0, {"nftables": []}, ""
            return 1, "", "Error: Could not process rule: Operation not supported\n"

        def set_json_output(self, val: bool) -> bool:
            return True

    backend = NftablesBackend()
    backend._nft = Refusing()
    try:
        with pytest.raises(FirewallError, match=r"Operation not supported.*backend") as exc:
            asyncio.run(backend.apply(build_ruleset(representative())))
        assert exc.value.code == "firewall"
    finally:
        backend.close()


def test_summaries_counted_from_the_ruleset_match_the_rendering() -> None:
    for st in (representative(), state(net("n1", "br1", "10.1.0.0/24")), state()):
        rs = build_ruleset(st)
        assert summaries_of(rs, ruleset_digest(rs)) == expected_summaries(render_nft_json(rs))
