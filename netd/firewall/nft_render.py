"""Pure rendering of a ``Ruleset`` into one libnftables JSON batch, and the summaries ``in_sync`` compares.

No libnftables import: golden tests run without root.  netd owns exactly two tables, ``inet netd`` and
``bridge netd``; nothing rendered here names any other table.  Every rendered table carries a marker chain
whose single rule's comment holds a hash of the whole rendering (nft 1.0.6's JSON parser silently drops
table comments, so the hash cannot live there), so ``in_sync`` can tell "exactly what netd applied" from
"something else" without comparing rule expressions the kernel normalises on the way back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from netd.core.ruleset import (
    Accept,
    Chain,
    Dispatch,
    DnatMap,
    Drop,
    Element,
    Jump,
    Masquerade,
    Match,
    NamedSet,
    Rule,
    Ruleset,
    Table,
    Verdict,
)

TABLE_NAME = "netd"
Family = Literal["inet", "bridge"]
FAMILIES: tuple[Family, ...] = ("inet", "bridge")
MARKER_CHAIN = "netd-state"
MARKER_PREFIX = "netd:ruleset:"

# (chain type, priority) per hook; numbers as nft prints them (filter = 0, srcnat = 100, dstnat = -100,
# bridge filter = -200).
_HOOKS: dict[tuple[Family, str], tuple[str, int]] = {
    ("inet", "forward"): ("filter", 0),
    ("inet", "postrouting"): ("nat", 100),
    ("inet", "prerouting"): ("nat", -100),
    ("inet", "output"): ("nat", -100),
    ("bridge", "forward"): ("filter", -200),
}

Json = dict[str, Any]


def tables_of(ruleset: Ruleset) -> dict[Family, Table]:
    return {"inet": ruleset.ip, "bridge": ruleset.bridge}


def render_nft_json(ruleset: Ruleset, digest: Digest | None = None) -> Json:
    """One atomic batch that replaces each non-empty netd table with its new content.

    Per wanted table: ``add table`` (so the delete cannot fail), ``delete table``, ``add table`` and its
    content.  Deleting tables netd no longer wants (an empty layer) is the backend's job: it must only delete
    what exists, which a pure function cannot know.  ``digest``: ``ruleset_digest(ruleset)`` when the caller
    has it already.
    """
    text = (digest or ruleset_digest(ruleset)).text
    cmds: list[Json] = []
    for fam, table in tables_of(ruleset).items():
        if table.empty:
            continue
        ref = {"family": fam, "name": TABLE_NAME}
        cmds += [{"add": {"table": ref}}, {"delete": {"table": ref}}]
        cmds += _render_table(fam, table)
        cmds += _marker(fam, text)
    return {"nftables": cmds}


# ---------------------------------------------------------------------------------------------------- digest

_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Digest:
    """The marker's hash of a ruleset, in two parts so that a delta can update it without the whole: a hash of
    everything but the set elements, and the sum (mod 2^64) of one 64-bit hash per element.  Adding the 1001st
    published port adds one term instead of hashing a 1000-element rendering again."""

    structure: str
    elements: int

    @property
    def text(self) -> str:
        return hashlib.sha256(f"{self.structure}.{self.elements:016x}".encode()).hexdigest()[:16]

    def moved(self, gone: int, added: int) -> Digest:
        return Digest(self.structure, (self.elements - gone + added) & _MASK)


def ruleset_digest(ruleset: Ruleset) -> Digest:
    body: list[Json] = []
    total = 0
    for fam, table in tables_of(ruleset).items():
        if table.empty:
            continue
        bare = tuple(NamedSet(s.name, s.key, (), s.value, s.interval) for s in table.sets)
        body.extend(_render_table(fam, Table(chains=table.chains, sets=bare)))
        for s in table.sets:
            total += sum(element_hash(fam, s.name, e) for e in s.elements)
    return Digest(ruleset_hash(body), total & _MASK)


def element_hash(fam: str, set_name: str, e: Element) -> int:
    raw = repr((fam, set_name, e.key, e.value)).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


def ruleset_hash(body: list[Json]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- delta


def render_nft_delta(old: Ruleset, new: Ruleset, old_digest: Digest) -> tuple[Json, Digest] | None:
    """A batch that turns the kernel's ``old`` into ``new`` by adding and deleting set/map elements only (and
    re-stamping the markers), with ``new``'s digest; None when anything else differs or nothing does.

    Its cost follows the number of changed elements, not the size of the maps: adding the 1001st published
    port is one element (two for a split map), neither a rewrite of the table nor a re-render of its maps.
    ``old_digest`` is ``ruleset_digest(old)`` (what the kernel's markers hold).
    """
    if old.bridge != new.bridge or old.ip.chains != new.ip.chains or old.ip.empty:
        return None
    old_sets = {s.name: s for s in old.ip.sets}
    if old_sets.keys() != {s.name for s in new.ip.sets}:
        return None
    base = {"family": "inet", "table": TABLE_NAME}
    dels: list[Json] = []
    adds: list[Json] = []
    gone_sum = added_sum = 0
    for ns in new.ip.sets:
        os_ = old_sets[ns.name]
        if (os_.key, os_.value, os_.interval) != (ns.key, ns.value, ns.interval):
            return None
        if os_.elements is ns.elements or os_.elements == ns.elements:  # shared elements: a C-level compare
            continue
        before, after = set(os_.elements), set(ns.elements)  # Elements are tuples: hashed in C
        gone = sorted(before - after, key=lambda e: e.key)
        new_elems = sorted(after - before, key=lambda e: e.key)
        gone_sum += sum(element_hash("inet", ns.name, e) for e in gone)
        added_sum += sum(element_hash("inet", ns.name, e) for e in new_elems)
        for part, old_part, new_part in zip(_headers(ns), _parts(ns, gone), _parts(ns, new_elems), strict=True):
            if old_part:
                keys = [_render_element(NamedSet(part.name, ns.key, ()), e) for e in old_part]
                dels.append({"delete": {"element": {**base, "name": part.name, "elem": keys}}})
            if new_part:
                elems = [_render_element(part, e) for e in new_part]
                adds.append({"add": {"element": {**base, "name": part.name, "elem": elems}}})
    if not dels and not adds:
        return None
    digest = old_digest.moved(gone_sum, added_sum)
    stamps: list[Json] = []
    for fam, table in tables_of(new).items():
        if not table.empty:
            stamps.append({"flush": {"chain": {"family": fam, "table": TABLE_NAME, "name": MARKER_CHAIN}}})
            stamps.append(_marker(fam, digest.text)[1])
    return {"nftables": dels + adds + stamps}, digest


def _headers(s: NamedSet) -> tuple[NamedSet, ...]:
    """``split_map(s)`` without the elements (splitting a 1000-element map per delta was O(N) again)."""
    values = s.value if isinstance(s.value, tuple) else (s.value,)
    return tuple(NamedSet(n, s.key, (), v) for n, v in zip(part_names(s), values, strict=True))  # type: ignore[arg-type]


def _parts(s: NamedSet, elems: list[Element]) -> list[list[Element]]:
    """``elems`` of ``s`` as ``split_map`` splits them: per part of a concatenated value, that part's value."""
    if not isinstance(s.value, tuple):
        return [elems]
    return [[Element(e.key, e.value[i] if isinstance(e.value, tuple) else e.value) for e in elems] for i in (0, 1)]


def delete_table_cmd(fam: Family) -> Json:
    return {"delete": {"table": {"family": fam, "name": TABLE_NAME}}}


def _marker(fam: Family, digest: str) -> list[Json]:
    base = {"family": fam, "table": TABLE_NAME}
    return [
        {"add": {"chain": {**base, "name": MARKER_CHAIN}}},
        {
            "add": {
                "rule": {
                    **base,
                    "chain": MARKER_CHAIN,
                    "expr": [{"return": None}],
                    "comment": MARKER_PREFIX + digest,
                }
            }
        },
    ]


def _render_table(fam: Family, table: Table) -> list[Json]:
    base = {"family": fam, "table": TABLE_NAME}
    out: list[Json] = [{"add": {"table": {"family": fam, "name": TABLE_NAME}}}]
    for ch in table.chains:  # chains first: map elements may jump to them
        out.append({"add": {"chain": _render_chain(fam, ch)}})
    for s in table.sets:
        for part in split_map(s):
            kind = "set" if part.value is None else "map"
            out.append({"add": {kind: {**base, **_render_set(part)}}})
    for ch in table.chains:
        for rule in ch.rules:
            out.append({"add": {"rule": {**base, "chain": ch.name, **_render_rule(fam, rule)}}})
    return out


def _render_chain(fam: Family, ch: Chain) -> Json:
    obj: Json = {"family": fam, "table": TABLE_NAME, "name": ch.name}
    if ch.hook is not None:
        ctype, prio = _HOOKS[(fam, ch.hook)]
        obj.update({"type": ctype, "hook": ch.hook, "prio": prio, "policy": "accept"})
    return obj


def part_names(s: NamedSet) -> tuple[str, ...]:
    """The names ``split_map`` gives the parts of ``s`` (without splitting its elements)."""
    return (f"{s.name}_addr", f"{s.name}_port") if isinstance(s.value, tuple) else (s.name,)


def split_map(s: NamedSet) -> tuple[NamedSet, ...]:
    """A map with a concatenated value (``addr . port``) as two maps, ``<name>_addr`` and ``<name>_port``: nft
    1.0.6's JSON parser refuses concatenated map values, and ``dnat to MAP_A : MAP_B`` does the same job."""
    if not isinstance(s.value, tuple):
        return (s,)
    values = _parts(s, list(s.elements))
    return tuple(
        NamedSet(name, s.key, tuple(elems), value=vtype)  # type: ignore[arg-type]
        for name, vtype, elems in zip(part_names(s), s.value, values, strict=True)
    )


def _render_set(s: NamedSet) -> Json:
    obj: Json = {"name": s.name, "type": s.key[0] if len(s.key) == 1 else list(s.key)}
    if s.value is not None:
        obj["map"] = s.value
    if s.interval:
        obj["flags"] = ["interval"]
    if s.elements:
        obj["elem"] = [_render_element(s, e) for e in s.elements]
    return obj


def _render_element(s: NamedSet, e: Element) -> Any:
    parts = [int(v) if t == "inet_service" else v for t, v in zip(s.key, e.key, strict=True)]
    key: Any = parts[0] if len(parts) == 1 else {"concat": parts}
    if s.value is None:
        return key
    value: Any = e.value
    if s.value == "inet_service" and isinstance(value, str):
        value = int(value)
    elif not (value is None or isinstance(value, str | tuple)):
        value = _render_verdict(value)
    return [key, value]


def _render_rule(fam: Family, rule: Rule) -> Json:
    exprs = _render_match(fam, rule.match)
    v = rule.verdict
    if isinstance(v, DnatMap) and not v.by_daddr:  # no address in the key: say which family it is for
        exprs.append(_cmp(_meta("nfproto"), "ipv4" if v.family == "ip" else "ipv6"))
    return {"expr": [*exprs, _render_verdict(v)], "comment": rule.comment}


def _cmp(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _prefix(net: Any) -> Any:
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _render_match(fam: Family, m: Match) -> list[Json]:
    out: list[Json] = []
    proto = m.family
    if fam == "bridge" and proto is not None:
        out.append(_cmp({"payload": {"protocol": "ether", "field": "type"}}, proto))
    if m.iif is not None:
        out.append(_cmp(_meta("iifname"), m.iif))
    if m.iif_in is not None:
        out.append(_cmp(_meta("iifname"), "@" + m.iif_in))
    if m.oif is not None:
        out.append(_cmp(_meta("oifname"), m.oif))
    if m.oif_in is not None:
        out.append(_cmp(_meta("oifname"), "@" + m.oif_in))
    if m.oif_not is not None:
        out.append(_cmp(_meta("oifname"), m.oif_not, "!="))
    if m.saddr is not None:
        out.append(_cmp({"payload": {"protocol": proto, "field": "saddr"}}, _prefix(m.saddr)))
    if m.daddr is not None:
        out.append(_cmp({"payload": {"protocol": proto, "field": "daddr"}}, _prefix(m.daddr)))
    if m.ct_state is not None:
        out.append(_cmp({"ct": {"key": "state"}}, sorted(m.ct_state), "in"))
    if m.ct_dnat:
        out.append(_cmp({"ct": {"key": "status"}}, "dnat", "in"))
    if m.fib_local:
        out.append(_cmp({"fib": {"result": "type", "flags": ["daddr"]}}, "local"))
    return out


def _render_verdict(v: Verdict) -> Json:
    if isinstance(v, Accept):
        return {"accept": None}
    if isinstance(v, Drop):
        return {"drop": None}
    if isinstance(v, Masquerade):
        return {"masquerade": None}
    if isinstance(v, Jump):
        return {"jump": {"target": v.chain}}
    if isinstance(v, Dispatch):
        key = "iifname" if v.key == "iif" else "oifname"
        return {"vmap": {"key": _meta(key), "data": "@" + v.map}}
    if isinstance(v, DnatMap):
        return _render_dnat(v)
    raise TypeError(f"unknown verdict {v!r}")


def _render_dnat(v: DnatMap) -> Json:
    """``dnat ip to [ip daddr .] meta l4proto . th dport map @<m>_addr : ... map @<m>_port``."""
    fields: list[Json] = [_meta("l4proto"), {"payload": {"protocol": "th", "field": "dport"}}]
    if v.by_daddr:
        fields.insert(0, {"payload": {"protocol": v.family, "field": "daddr"}})
    key = {"concat": fields}
    return {
        "dnat": {
            "family": v.family,
            "addr": {"map": {"key": key, "data": f"@{v.map}_addr"}},
            "port": {"map": {"key": key, "data": f"@{v.map}_port"}},
        }
    }
