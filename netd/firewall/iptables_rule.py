"""One rule of netd's model as an ``iptables-restore`` line: chain names, tables, matches, targets, comments.

``iptables_render`` builds whole transactions from these; nothing here reads ``iptables-save``.
"""

from __future__ import annotations

import hashlib
import re
from ipaddress import ip_address
from typing import Literal

from netd.core.errors import FirewallError
from netd.core.ruleset import (
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
PUBLISHED = "NETD-PUBLISHED"  # chain_name("published"): the only chain with one rule per published port
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


def table_of_chains(ruleset: Ruleset) -> dict[str, TableName]:
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


def fits(m: Match, family: IpFamily) -> bool:
    fam = m.family
    return fam is None or (fam == "ip") == (family == "ipv4")


def render_rule(
    rule: Rule, names: dict[str, str], sets: dict[str, NamedSet], members: dict[str, list[str]]
) -> list[str]:
    comment = quote_comment(rule.comment)
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
            f"{direction} {_ifname(e.key[0])} -m comment --comment {quote_comment(comment)} {target}"
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


def dnat_lines(v: DnatMap, sets: dict[str, NamedSet], comment: str) -> list[str]:
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


def quote_comment(text: str) -> str:
    if not _COMMENT_RE.match(text):
        raise FirewallError(f"iptables: rule comment {text!r} is not a valid netd comment")
    return f'"{text}"'


def body_text(tables: dict[TableName, list[tuple[str, tuple[str, ...]]]]) -> str:
    return "\n".join(f"{t} {name}\n" + "\n".join(rules) for t, chains in tables.items() for name, rules in chains)


# ---------------------------------------------------------------------------------------------------- digest

_MASK = (1 << 64) - 1


def line_hash(line: str) -> int:
    """A 64-bit hash of one ``NETD-PUBLISHED`` rule: the marker's digest sums them (see ``digest_text``)."""
    return int.from_bytes(hashlib.blake2b(line.encode(), digest_size=8).digest(), "little")


def lines_sum(lines: tuple[str, ...] | list[str], base: int = 0) -> int:
    return (base + sum(line_hash(x) for x in lines)) & _MASK


def digest_text(structure: str, elements: int) -> str:
    """The marker's hash: of everything but the published-port rules (``structure``) and of the sum (mod 2^64)
    of one hash per published-port rule, so that a port delta updates it by the rules it changed (issue 14)."""
    return hashlib.sha256(f"{structure}.{elements & _MASK:016x}".encode()).hexdigest()[:16]
