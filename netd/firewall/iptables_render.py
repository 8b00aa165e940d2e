"""Pure rendering of a ``Ruleset`` into ``iptables-restore --noflush`` input, and parsing of ``iptables-save``.

No subprocess import: golden tests run without root.  kube-proxy's model: netd owns the chains named
``NETD-*`` and nothing else.  Every transaction declares each of them (``:NETD-X - [0:0]`` creates or flushes
the chain inside the transaction, so it is replaced atomically); the only lines that touch another chain are
netd's guarded jumps into the built-in chains (and ``DOCKER-USER``), each added only when ``iptables-save``
showed it missing (a ``-C`` inside restore input would abort the whole transaction instead of guarding).

Mapping from the rule model (``rules.py``)::

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
from ipaddress import ip_address
from typing import Literal

from netd.errors import FirewallError
from netd.firewall.ruleset import (
    SET_BRIDGES,
    Accept,
    Dispatch,
    DnatMap,
    Drop,
    Jump,
    Masquerade,
    Match,
    NamedSet,
    Rule,
    Ruleset,
    Verdict,
)

IpFamily = Literal["ipv4", "ipv6"]
IP_FAMILIES: tuple[IpFamily, ...] = ("ipv4", "ipv6")
TableName = Literal["filter", "nat"]
TABLES: tuple[TableName, ...] = ("filter", "nat")

PREFIX = "NETD-"
FORWARD = "NETD-FORWARD"
POSTROUTING = "NETD-POSTROUTING"
PREROUTING = "NETD-PREROUTING"
OUTPUT = "NETD-OUTPUT"
ISOLATION = "NETD-ISOLATION"
STATE = "NETD-STATE"
MARKER_PREFIX = "netd:ruleset:"
JUMP_COMMENT = "netd:jump"
MAX_CHAIN = 28  # iptables' limit (XT_EXTENSION_MAXNAMELEN - 1)

# hook -> (table, netd chain, built-in chains that jump to it)
HOOKS: dict[str, tuple[TableName, str, tuple[str, ...]]] = {
    "forward": ("filter", FORWARD, ("FORWARD",)),
    "postrouting": ("nat", POSTROUTING, ("POSTROUTING",)),
    "prerouting": ("nat", PREROUTING, ("PREROUTING",)),
    "output": ("nat", OUTPUT, ("OUTPUT",)),
}
DOCKER_USER = "DOCKER-USER"  # Docker's documented place for rules that must win over its own

_CHAIN_RE = re.compile(r"^[A-Za-z0-9_-]{1,28}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,15}$")
_COMMENT_RE = re.compile(r"^netd:[A-Za-z0-9_.:/-]{1,200}$")
_CT_ORDER = ("invalid", "new", "related", "established")


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
    """netd's chains for one family: table -> ordered (chain, rule lines); plus the hash of all of it."""

    tables: dict[TableName, tuple[tuple[str, tuple[str, ...]], ...]]
    digest: str

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
    table_of = _table_of_chains(ruleset)
    hooked = {ch.hook for ch in ruleset.ip.chains if ch.hook is not None}
    for ch in ruleset.ip.chains:
        lines: list[str] = []
        for rule in ch.rules:
            if isinstance(rule.verdict, DnatMap):
                if (rule.verdict.family == "ip") == (family == "ipv4"):
                    lines.extend(_dnat_lines(rule.verdict, sets, _comment(rule.comment)))
            elif _fits(rule.match, family):
                lines.extend(_render_rule(rule, names, sets, members))
        tables[table_of[ch.name]].append((names[ch.name], tuple(lines)))
    if "prerouting" not in hooked:  # declared always, so published ports later only fill it
        tables["nat"].append((PREROUTING, ()))
    for mname, lines in members.items():
        tables["filter"].append((mname, tuple(lines)))
    body = _body_text(tables)
    digest = hashlib.sha256(f"{family}\n{body}".encode()).hexdigest()[:16]
    tables["filter"].append((STATE, (f'-m comment --comment "{MARKER_PREFIX}{digest}" -j RETURN',)))
    return Rendered({t: tuple(v) for t, v in tables.items()}, digest)


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


# ---------------------------------------------------------------------------------------------------- helpers


def chain_name(ir_name: str) -> str:
    """``forward`` -> NETD-FORWARD, ``to-<key>`` -> NETD-TO-<key>; hashed when too long (<= 28 chars)."""
    for _hook, (_t, chain, _p) in HOOKS.items():
        if ir_name == chain[len(PREFIX) :].lower():
            return chain
    head, sep, tail = ir_name.partition("-")
    name = PREFIX + (head.upper() + sep + tail if sep else ir_name.upper())
    if not _CHAIN_RE.match(name):
        name = PREFIX + "H" + hashlib.sha256(ir_name.encode()).hexdigest()[:16]
    return name


def _table_of_chains(ruleset: Ruleset) -> dict[str, TableName]:
    """Hooked chains by hook; a regular chain lives in the table of the chains that jump to it (default filter)."""
    out: dict[str, TableName] = {}
    targets: dict[str, set[str]] = {}
    for ch in ruleset.ip.chains:
        for rule in ch.rules:
            for t in _targets(rule.verdict, ruleset):
                targets.setdefault(t, set()).add(ch.name)
    for ch in ruleset.ip.chains:
        if ch.hook is not None:
            out[ch.name] = HOOKS[ch.hook][0]
    for ch in ruleset.ip.chains:
        if ch.name not in out:
            parents = targets.get(ch.name, set())
            out[ch.name] = "nat" if parents and all(out.get(p) == "nat" for p in parents) else "filter"
    return out


def _targets(v: Verdict, ruleset: Ruleset) -> list[str]:
    if isinstance(v, Jump):
        return [v.chain]
    if isinstance(v, Dispatch):
        s = next((s for s in ruleset.ip.sets if s.name == v.map), None)
        return [e.value.chain for e in s.elements if isinstance(e.value, Jump)] if s else []
    return []


def _fits(m: Match, family: IpFamily) -> bool:
    fam = m.family
    return fam is None or (fam == "ip") == (family == "ipv4")


def _render_rule(
    rule: Rule, names: dict[str, str], sets: dict[str, NamedSet], members: dict[str, list[str]]
) -> list[str]:
    comment = _comment(rule.comment)
    m = rule.match
    if m.iif_in is not None or m.oif_in is not None:
        if m.iif_in is not None and m.oif_in is not None:
            raise FirewallError("iptables: a rule matching two interface sets cannot be rendered")
        direction, set_name = ("-i", m.iif_in) if m.iif_in is not None else ("-o", m.oif_in)
        assert set_name is not None
        member = _membership_chain(set_name, direction, rule.verdict, sets, names, members)
        return [_line(m, None, f"-j {member}", comment)]
    if isinstance(rule.verdict, Dispatch):
        d = rule.verdict
        flag = "-i" if d.key == "iif" else "-o"
        nset = _set(sets, d.map)
        out = []
        for el in nset.elements:
            if el.value is None or isinstance(el.value, str | tuple | Dispatch):
                raise FirewallError(f"iptables: map {d.map!r} has an element that is not a verdict")
            out.append(_line(m, f"{flag} {_ifname(el.key[0])}", _target(el.value, names), comment))
        return out
    return [_line(m, None, _target(rule.verdict, names), comment)]


def _membership_chain(
    set_name: str,
    direction: str,
    verdict: Verdict,
    sets: dict[str, NamedSet],
    names: dict[str, str],
    members: dict[str, list[str]],
) -> str:
    target = _target(verdict, names)
    if set_name == SET_BRIDGES and direction == "-i" and isinstance(verdict, Drop):
        name, comment = ISOLATION, "netd:isolation"
    else:
        h = hashlib.sha256(f"{set_name}{direction}{target}".encode()).hexdigest()[:16]
        name, comment = f"{PREFIX}S{h}", f"netd:set-{set_name}"
    if name not in members:
        nset = _set(sets, set_name)
        members[name] = [
            f"{direction} {_ifname(e.key[0])} -m comment --comment {_comment(comment)} {target}"
            for e in nset.elements
        ]
    return name


def _set(sets: dict[str, NamedSet], name: str) -> NamedSet:
    nset = sets.get(name)
    if nset is None or nset.key != ("ifname",):
        raise FirewallError(f"iptables: set {name!r} is missing or not a set of interface names")
    return nset


def _line(m: Match, extra_if: str | None, target: str, comment: str) -> str:
    parts: list[str] = []
    if m.saddr is not None:
        parts.append(f"-s {m.saddr.with_prefixlen}")
    if m.daddr is not None:
        parts.append(f"-d {m.daddr.with_prefixlen}")
    if m.iif is not None:
        parts.append(f"-i {_ifname(m.iif)}")
    if m.oif is not None:
        parts.append(f"-o {_ifname(m.oif)}")
    if extra_if is not None:
        parts.append(extra_if)
    if m.oif_not is not None:
        parts.append(f"! -o {_ifname(m.oif_not)}")
    if m.ct_state is not None:
        states = ",".join(s.upper() for s in _CT_ORDER if s in m.ct_state)
        parts.append(f"-m conntrack --ctstate {states}")
    if m.ct_dnat:
        parts.append("-m conntrack --ctstate DNAT")
    if m.fib_local:
        parts.append("-m addrtype --dst-type LOCAL")
    parts += [f"-m comment --comment {comment}", target]
    return " ".join(parts)


def _dnat_lines(v: DnatMap, sets: dict[str, NamedSet], comment: str) -> list[str]:
    """One DNAT rule per element of the map ``v.map`` (validated values only: addresses, protocols, ports)."""
    nset = sets.get(v.map)
    if nset is None:
        raise FirewallError(f"iptables: map {v.map!r} is missing")
    out = []
    for el in nset.elements:
        host, (proto, port) = (el.key[0], el.key[1:]) if v.by_daddr else (None, el.key)
        if not isinstance(el.value, tuple) or proto not in ("tcp", "udp", "sctp"):
            raise FirewallError(f"iptables: map {v.map!r} has an element that is not proto . port -> addr . port")
        addr, to_port = ip_address(el.value[0]), int(el.value[1])
        dest = f"[{addr}]:{to_port}" if addr.version == 6 else f"{addr}:{to_port}"
        match = f"-d {ip_address(host)}/{32 if v.family == 'ip' else 128} " if host is not None else ""
        out.append(
            f"{match}-p {proto} -m {proto} --dport {int(port)} -m comment --comment {comment} "
            f"-j DNAT --to-destination {dest}"
        )
    return out


def _target(v: Verdict, names: dict[str, str]) -> str:
    if isinstance(v, Accept):
        return "-j ACCEPT"
    if isinstance(v, Drop):
        return "-j DROP"
    if isinstance(v, Masquerade):
        return "-j MASQUERADE"
    if isinstance(v, Jump):
        if v.chain not in names:
            raise FirewallError(f"iptables: jump to unknown chain {v.chain!r}")
        return f"-j {names[v.chain]}"
    raise FirewallError(f"iptables: verdict {v!r} cannot be rendered here")


def _ifname(name: str) -> str:
    if not _IFNAME_RE.match(name) or name.endswith("+"):
        raise FirewallError(
            f"iptables: interface name {name!r} cannot be used in a rule (1-15 of letters, digits, '_.@+-', "
            "not ending in '+', which iptables reads as a wildcard); rename the bridge"
        )
    return name


def _comment(text: str) -> str:
    if not _COMMENT_RE.match(text):
        raise FirewallError(f"iptables: rule comment {text!r} is not a valid netd comment")
    return f'"{text}"'


def _body_text(tables: dict[TableName, list[tuple[str, tuple[str, ...]]]]) -> str:
    return "\n".join(f"{t} {name}\n" + "\n".join(rules) for t, chains in tables.items() for name, rules in chains)
