"""What the firewall check compares for nftables: per netd table, chain -> rule count, set -> element count and
the marker's digest, from a rendered batch, from the kernel's listing, or straight from a ``Ruleset`` (no
rendering: the check after a foreign write costs the listing, not a re-render of thousands of elements).
"""

from __future__ import annotations

from dataclasses import dataclass

from netd.core.ruleset import Ruleset
from netd.firewall.nft_render import MARKER_CHAIN, MARKER_PREFIX, TABLE_NAME, Digest, Json, part_names, tables_of


@dataclass(frozen=True)
class TableSummary:
    """What ``in_sync`` compares: chain -> rule count, set -> element count, and the marker hash."""

    chains: tuple[tuple[str, int], ...]
    sets: tuple[tuple[str, int], ...]
    marker: str | None


def expected_summaries(batch: Json) -> dict[str, TableSummary]:
    """Summaries of the tables a rendered batch creates (keyed by family)."""
    return _summarise([next(iter(c["add"].items())) for c in batch["nftables"] if "add" in c])


def observed_summaries(listing: Json) -> dict[str, TableSummary]:
    """Summaries of netd's tables in a ``list table`` JSON answer (a ``metainfo`` plus objects)."""
    return _summarise([next(iter(o.items())) for o in listing.get("nftables", []) if "metainfo" not in o])


def _summarise(objs: list[tuple[str, Json]]) -> dict[str, TableSummary]:
    chains: dict[str, dict[str, int]] = {}
    sets: dict[str, dict[str, int]] = {}
    markers: dict[str, str | None] = {}
    for kind, obj in objs:
        fam = str(obj["family"])
        if kind == "table" and obj.get("name") == TABLE_NAME:
            chains.setdefault(fam, {})
            sets.setdefault(fam, {})
            markers.setdefault(fam, None)
        elif obj.get("table") != TABLE_NAME:
            continue
        elif kind == "chain":
            chains.setdefault(fam, {}).setdefault(str(obj["name"]), 0)
        elif kind in ("set", "map"):
            sets.setdefault(fam, {})[str(obj["name"])] = len(obj.get("elem", []))
        elif kind == "rule":
            fc = chains.setdefault(fam, {})
            fc[str(obj["chain"])] = fc.get(str(obj["chain"]), 0) + 1
            comment = obj.get("comment")
            if obj["chain"] == MARKER_CHAIN and isinstance(comment, str) and comment.startswith(MARKER_PREFIX):
                markers[fam] = comment[len(MARKER_PREFIX) :]
    return {
        fam: TableSummary(
            chains=tuple(sorted(chains[fam].items())),
            sets=tuple(sorted(sets.get(fam, {}).items())),
            marker=markers.get(fam),
        )
        for fam in chains
    }


def summaries_of(ruleset: Ruleset, digest: Digest) -> dict[str, TableSummary]:
    """What ``expected_summaries(render_nft_json(ruleset))`` says, counted from the ruleset itself."""
    out: dict[str, TableSummary] = {}
    for fam, table in tables_of(ruleset).items():
        if table.empty:
            continue
        chains = {ch.name: len(ch.rules) for ch in table.chains}
        chains[MARKER_CHAIN] = 1
        sets = {name: len(s.elements) for s in table.sets for name in part_names(s)}
        out[fam] = TableSummary(tuple(sorted(chains.items())), tuple(sorted(sets.items())), digest.text)
    return out
