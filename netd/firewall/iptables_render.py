"""Pure rendering of a ``Ruleset`` into ``iptables-restore --noflush`` input, and parsing of ``iptables-save``.

No subprocess import: golden tests run without root.  kube-proxy's model: netd owns the chains named
``NETD-*`` and nothing else.  Every transaction declares each of them (``:NETD-X - [0:0]`` creates or flushes
the chain inside the transaction, so it is replaced atomically); the only lines that touch another chain are
netd's guarded jumps into the built-in chains (and ``DOCKER-USER``), each added only when ``iptables-save``
showed it missing (a ``-C`` inside restore input would abort the whole transaction instead of guarding).

Mapping from the rule model (``ruleset.py``; one rule becomes lines in ``iptables_rule.py``)::

    ip.forward (hook forward)      filter NETD-FORWARD      jumped to from FORWARD (first rule) and DOCKER-USER
    ip.postrouting                 nat NETD-POSTROUTING     jumped to from POSTROUTING
    ip.prerouting (or empty)       nat NETD-PREROUTING      jumped to from PREROUTING (published ports)
    ip.output                      nat NETD-OUTPUT          jumped to from OUTPUT (published ports, from the host)
    published (DnatMap verdicts)   nat NETD-PUBLISHED       one "-p P --dport N -j DNAT" per map element: iptables
                                                            has no maps, so a packet walks them in turn
    to-<key> / from-<key>          filter NETD-TO-<key> / NETD-FROM-<key>
    Dispatch(oif, map)             one "-o <bridge> -j <chain>" per map element (one per network, never per
                                   endpoint)
    iif @bridges drop              "-j NETD-ISOLATION", which holds "-i <bridge> -j DROP" per netd bridge
    bridge layer (icc off)         not rendered: with br_netfilter, bridged IPv4/IPv6 crosses FORWARD and the
                                   "-i <bridge> -j DROP" of NETD-TO-<key> does the work (the backend makes
                                   sure bridge-nf-call-ip(6)tables is on; see iptables.py)

Rules whose match names an IPv4 (IPv6) address go only to iptables (ip6tables); the others go to both.  The
filter table also holds ``NETD-STATE``, an unreferenced chain whose single rule's comment carries a hash of the
family's rendering, so ``in_sync`` can tell "exactly what netd applied" from "something else".
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

from netd.core.ruleset import (
    DnatMap,
    Ruleset,
)
from netd.firewall.iptables_rule import (
    DOCKER_USER,
    HOOKS,
    JUMP_COMMENT,
    MARKER_PREFIX,
    PREFIX,
    PREROUTING,
    PUBLISHED,
    STATE,
    TABLES,
    IpFamily,
    TableName,
    body_text,
    chain_name,
    digest_text,
    dnat_lines,
    fits,
    lines_sum,
    quote_comment,
    render_rule,
    table_of_chains,
)

# ---------------------------------------------------------------------------------------------------- observed


@dataclass
class SavedTable:
    """One table of ``iptables-save`` output: chain -> policy ("-" for user chains) and the ``-A`` lines."""

    chains: dict[str, str] = field(default_factory=dict)
    rules: list[tuple[str, str]] = field(default_factory=list)  # (chain, rest of the line after "-A CHAIN ")

    def count(self, chain: str) -> int:
        return self.counts().get(chain, 0)

    def counts(self) -> Counter[str]:
        """Rules per chain (one pass; in_sync asks for every netd chain, thousands at 1000 networks)."""
        return Counter(c for c, _ in self.rules)


Saved = dict[str, SavedTable]  # table name -> contents


def parse_save(text: str) -> Saved:
    """Parse ``iptables-save`` output (all tables); comments, counters and unknown lines are ignored."""
    out: Saved = {}
    cur: SavedTable | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            cur = out.setdefault(line[1:], SavedTable())
        elif cur is None or not line or line.startswith("#") or line == "COMMIT":
            continue
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            cur.chains[name] = rest.split(" ", 1)[0] or "-"
        elif line.startswith("-A "):
            chain, _, rest = line[3:].partition(" ")
            cur.rules.append((chain, rest))
    return out


def jump_spec(target: str) -> str:
    return f'-m comment --comment "{JUMP_COMMENT}" -j {target}'


def netd_jumps(saved: Saved) -> dict[tuple[str, str, str], int]:
    """(table, parent chain, netd chain) -> how many of netd's jump rules are there."""
    out: dict[tuple[str, str, str], int] = {}
    for tname, table in saved.items():
        for chain, rest in table.rules:
            for _hook, (_t, target, _parents) in HOOKS.items():
                if rest == jump_spec(target) and not chain.startswith(PREFIX):
                    key = (tname, chain, target)
                    out[key] = out.get(key, 0) + 1
    return out


# ---------------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Rendered:
    """netd's chains for one family: table -> ordered (chain, rule lines); plus the hash of all of it (the
    marker's ``digest_text(structure, elements)``; ``structure`` is "" when only the digest is known)."""

    tables: dict[TableName, tuple[tuple[str, tuple[str, ...]], ...]]
    digest: str
    structure: str = ""
    elements: int = 0

    def chain_names(self, table: TableName) -> list[str]:
        return [name for name, _ in self.tables.get(table, ())]

    def counts(self) -> dict[tuple[str, str], int]:
        return {(t, name): len(rules) for t, chains in self.tables.items() for name, rules in chains}


def wanted_jumps(saved: Saved, rendered: Rendered) -> list[tuple[TableName, str, str]]:
    """(table, parent, netd chain) for every jump netd needs, given which chains exist (DOCKER-USER)."""
    out: list[tuple[TableName, str, str]] = []
    for _hook, (table, chain, parents) in HOOKS.items():
        if chain not in rendered.chain_names(table):
            continue
        for parent in parents:
            out.append((table, parent, chain))
        if table == "filter" and DOCKER_USER in saved.get("filter", SavedTable()).chains:
            out.append((table, DOCKER_USER, chain))
    return out


def render_chains(ruleset: Ruleset, family: IpFamily) -> Rendered:
    """netd's chains and rules for ``family`` (empty when the ruleset is empty)."""
    if ruleset.ip.empty:
        return Rendered({}, "")
    sets = {s.name: s for s in ruleset.ip.sets}
    names = {ch.name: chain_name(ch.name) for ch in ruleset.ip.chains}
    tables: dict[TableName, list[tuple[str, tuple[str, ...]]]] = {"filter": [], "nat": []}
    members: dict[str, list[str]] = {}  # membership chains (NETD-ISOLATION) -> their rules
    table_of = table_of_chains(ruleset)
    hooked = {ch.hook for ch in ruleset.ip.chains if ch.hook is not None}
    for ch in ruleset.ip.chains:
        lines: list[str] = []
        for rule in ch.rules:
            if isinstance(rule.verdict, DnatMap):
                if (rule.verdict.family == "ip") == (family == "ipv4"):
                    lines.extend(dnat_lines(rule.verdict, sets, quote_comment(rule.comment)))
            elif fits(rule.match, family):
                lines.extend(render_rule(rule, names, sets, members))
        tables[table_of[ch.name]].append((names[ch.name], tuple(lines)))
    if "prerouting" not in hooked:  # declared always, so published ports later only fill it
        tables["nat"].append((PREROUTING, ()))
    for mname, lines in members.items():
        tables["filter"].append((mname, tuple(lines)))
    # the published-port rules are hashed one by one (a sum): a port delta updates the digest by what it changed
    bare = {t: [(name, () if name == PUBLISHED else rules) for name, rules in v] for t, v in tables.items()}
    structure = hashlib.sha256(f"{family}\n{body_text(bare)}".encode()).hexdigest()[:16]
    elements = lines_sum(dict(tables["nat"]).get(PUBLISHED, ()))
    digest = digest_text(structure, elements)
    tables["filter"].append((STATE, (marker_rule(digest),)))
    return Rendered({t: tuple(v) for t, v in tables.items()}, digest, structure, elements)


def marker_rule(digest: str) -> str:
    """``NETD-STATE``'s single rule (after ``-A NETD-STATE ``)."""
    return f'-m comment --comment "{MARKER_PREFIX}{digest}" -j RETURN'


def render_restore(rendered: Rendered, saved: Saved) -> str:
    """The ``iptables-restore --noflush`` input that makes the kernel hold ``rendered`` and nothing else of netd's.

    ``saved`` is the current ``iptables-save`` of the same family: it tells which jumps are already there (they
    are added only when missing, extra copies removed) and which ``NETD-*`` chains are stale (flushed, then
    deleted).  Returns "" when there is nothing to do.
    """
    have = netd_jumps(saved)
    want = wanted_jumps(saved, rendered)
    out: list[str] = []
    for table in TABLES:
        chains = list(rendered.tables.get(table, ()))
        existing = saved.get(table, SavedTable()).chains
        wanted_names = {name for name, _ in chains}
        stale = sorted(c for c in existing if c.startswith(PREFIX) and c not in wanted_names)
        lines: list[str] = [f":{name} - [0:0]" for name, _ in chains]
        lines += [f":{name} - [0:0]" for name in stale]  # flush them: nothing of netd's may reference them
        for name, rules in chains:
            lines += [f"-A {name} {r}" for r in rules]
        for (t, parent, target), n in sorted(have.items()):
            if t != table:
                continue
            keep = 1 if (table, parent, target) in want else 0
            lines += [f"-D {parent} {jump_spec(target)}"] * max(0, n - keep)
        for t, parent, target in want:
            if t == table and have.get((t, parent, target), 0) == 0:
                lines.append(f"-I {parent} 1 {jump_spec(target)}")
        lines += [f"-X {name}" for name in stale]
        if chains or stale or any(line.startswith(("-D", "-I")) for line in lines):
            out += [f"*{table}", *lines, "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def in_sync(rendered: Rendered, saved: Saved) -> bool:
    """True when the kernel holds exactly netd's chains with the expected rule counts, marker and jumps."""
    for table in TABLES:
        st = saved.get(table, SavedTable())
        netd = {c for c in st.chains if c.startswith(PREFIX)}
        if netd != set(rendered.chain_names(table)):
            return False
        counts = st.counts()
        for name, rules in rendered.tables.get(table, ()):
            if counts.get(name, 0) != len(rules):
                return False
    if rendered.tables and marker_of(saved) != rendered.digest:
        return False
    want = {(t, p, c): 1 for t, p, c in wanted_jumps(saved, rendered)}
    return netd_jumps(saved) == want


def marker_of(saved: Saved) -> str | None:
    for chain, rest in saved.get("filter", SavedTable()).rules:
        m = re.fullmatch(r'-m comment --comment "?' + re.escape(MARKER_PREFIX) + r'([0-9a-f]+)"? -j RETURN', rest)
        if chain == STATE and m:
            return m.group(1)
    return None


def rendered_from_saved(saved: Saved) -> Rendered:
    """netd's chains as ``saved`` holds them: restoring this puts back what netd had (a failed apply's undo)."""
    tables: dict[TableName, tuple[tuple[str, tuple[str, ...]], ...]] = {}
    for table in TABLES:
        st = saved.get(table, SavedTable())
        names = [c for c in st.chains if c.startswith(PREFIX)]
        if names:
            tables[table] = tuple((c, tuple(r for ch, r in st.rules if ch == c)) for c in names)
    return Rendered(tables, marker_of(saved) or "")


def render_removal(saved: Saved) -> str:
    """Restore input that removes netd's jumps and every ``NETD-*`` chain, and nothing else ("" if none)."""
    return render_restore(Rendered({}, ""), saved)
