"""Pure: the ``iptables-restore --noflush`` input that changes only the published-port rules (issue 14).

iptables has no maps: ``NETD-PUBLISHED`` (nat) holds one DNAT rule per element of the four DNAT maps, and is the
only chain with a rule per mapping (the filter accepts and the hairpin masquerades are per network: a network
that starts or stops publishing changes its chains, and that is a full apply).  When two rulesets differ in the
DNAT maps' elements only, the kernel's ``old`` is turned into ``new`` by deleting the rules of the elements that
went (``-D`` by rule spec: it fails, and aborts the table's transaction, when the rule is not there) and adding
those of the elements that came, and by swapping the ``NETD-STATE`` marker (``-D`` of the old one, which also
fails when the kernel's marker is not netd's last, then ``-A`` of the new one).

Order: the rules of one map never overlap (one key each), but a rule keyed by host address (``dnat4``) and one
for every address (``dnat4_any``) can, and the full rendering puts every keyed rule first (as the nftables
rules look the keyed map up first).  A delta keeps that: keyed rules are inserted at the top (``-I ... 1``), the
others appended (``-A``), so every keyed rule stays above every unkeyed one.

The new ``Rendered`` is derived from the old one (the marker's digest is a hash of the structure plus a sum of
one hash per published-port rule: see ``digest_text``), so a delta costs what changed, not the number of ports.
"""

from __future__ import annotations

from dataclasses import dataclass

from netd.core.ruleset import DnatMap, Element, NamedSet, Ruleset
from netd.firewall.iptables_render import Rendered, marker_rule
from netd.firewall.iptables_rule import (
    IP_FAMILIES,
    PUBLISHED,
    STATE,
    IpFamily,
    TableName,
    digest_text,
    dnat_lines,
    line_hash,
    quote_comment,
)


@dataclass(frozen=True)
class Delta:
    """Per family: the restore input ("" when the family did not change) and the new ruleset's rendering."""

    texts: dict[IpFamily, str]
    rendered: dict[IpFamily, Rendered]
    rules: int  # DNAT rules deleted + added, both families


@dataclass
class _Change:
    gone: list[str]
    keyed: list[str]  # added, keyed by host address: inserted at the top
    anyaddr: list[str]  # added, for every host address: appended


def render_ipt_delta(old: Ruleset, new: Ruleset, old_rendered: dict[IpFamily, Rendered]) -> Delta | None:
    """The delta from ``old`` (rendered as ``old_rendered``, what the kernel holds) to ``new``; None when
    anything but the DNAT maps' elements differs, or nothing does."""
    if old.ip.empty or old.bridge != new.bridge or old.ip.chains != new.ip.chains:
        return None
    dnat = _dnat_rules(new)
    old_sets = {s.name: s for s in old.ip.sets}
    if dnat is None or old_sets.keys() != {s.name for s in new.ip.sets}:
        return None
    changes: dict[IpFamily, _Change] = {}
    for ns in new.ip.sets:
        os_ = old_sets[ns.name]
        if os_.elements is ns.elements and os_ == ns:
            continue
        if (os_.key, os_.value, os_.interval) != (ns.key, ns.value, ns.interval):
            return None
        if os_.elements == ns.elements:  # shared elements: a C-level compare
            continue
        if ns.name not in dnat:
            return None
        verdict, comment = dnat[ns.name]
        before, after = set(os_.elements), set(ns.elements)  # Elements are tuples: hashed in C
        ch = changes.setdefault("ipv4" if verdict.family == "ip" else "ipv6", _Change([], [], []))
        ch.gone += _lines(verdict, comment, ns, before - after)
        (ch.keyed if verdict.by_daddr else ch.anyaddr).extend(_lines(verdict, comment, ns, after - before))
    if not changes:
        return None
    texts: dict[IpFamily, str] = {f: "" for f in IP_FAMILIES}
    rendered = dict(old_rendered)
    for fam, ch in changes.items():
        out = _family_delta(old_rendered[fam], ch)
        if out is None:
            return None
        texts[fam], rendered[fam] = out
    count = sum(len(c.gone) + len(c.keyed) + len(c.anyaddr) for c in changes.values())
    return Delta(texts, rendered, count)


def _dnat_rules(rs: Ruleset) -> dict[str, tuple[DnatMap, str]] | None:
    """DNAT map name -> the rule that renders it (its verdict and comment); None when one is not in the
    published-port chain or is rendered twice."""
    out: dict[str, tuple[DnatMap, str]] = {}
    for ch in rs.ip.chains:
        for rule in ch.rules:
            if isinstance(rule.verdict, DnatMap):
                if ch.name != "published" or rule.verdict.map in out:
                    return None
                out[rule.verdict.map] = (rule.verdict, rule.comment)
    return out


def _lines(verdict: DnatMap, comment: str, ns: NamedSet, elems: set[Element]) -> list[str]:
    if not elems:
        return []
    part = NamedSet(ns.name, ns.key, tuple(sorted(elems, key=lambda e: e.key)), ns.value)
    return dnat_lines(verdict, {ns.name: part}, quote_comment(comment))


def _family_delta(old: Rendered, ch: _Change) -> tuple[str, Rendered] | None:
    if not old.structure:  # only a digest known (read back from the kernel): cannot be updated
        return None
    nat = dict(old.tables.get("nat", ()))
    filt = dict(old.tables.get("filter", ()))
    have = nat.get(PUBLISHED)
    if have is None or STATE not in filt:
        return None
    gone = set(ch.gone)
    if len(gone) != len(ch.gone) or not gone <= set(have):
        return None
    added = ch.keyed + ch.anyaddr
    elements = old.elements - sum(line_hash(x) for x in ch.gone) + sum(line_hash(x) for x in added)
    digest = digest_text(old.structure, elements)
    kept = tuple(x for x in have if x not in gone) if gone else have
    published = (*reversed(ch.keyed), *kept, *ch.anyaddr)  # the order the kernel will have
    tables: dict[TableName, tuple[tuple[str, tuple[str, ...]], ...]] = {
        "filter": tuple((n, (marker_rule(digest),) if n == STATE else r) for n, r in old.tables["filter"]),
        "nat": tuple((n, published if n == PUBLISHED else r) for n, r in old.tables["nat"]),
    }
    lines = [
        "*filter",
        f"-D {STATE} {marker_rule(old.digest)}",
        f"-A {STATE} {marker_rule(digest)}",
        "COMMIT",
        "*nat",
        *(f"-D {PUBLISHED} {x}" for x in ch.gone),
        *(f"-I {PUBLISHED} 1 {x}" for x in ch.keyed),
        *(f"-A {PUBLISHED} {x}" for x in ch.anyaddr),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n", Rendered(tables, digest, old.structure, elements & ((1 << 64) - 1))
