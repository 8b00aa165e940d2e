"""Pure rendering of an ``LbRuleset`` into ``iptables-restore --noflush`` input for the nat table.

kube-proxy's iptables mode: iptables has no maps and no hash-to-slot verdict, so a VIP or published port is one
rule in ``NETDLB-PRE`` (a packet walks them in turn: O(ports), unlike nftables' one map lookup), and a spread
chain picks endpoint i of the remaining n with ``-m statistic --mode random --probability 1/(n-i)`` (even over
all: the k-th rule is reached with probability (n-k)/n and taken with 1/(n-k)).

``stickiness=source-ip`` is refused: iptables has no stateless "hash the source into N slots" match
(``-m recent`` remembers clients per backend but needs a rule set per backend and forgets on restart; ``HMARK``
overwrites the whole packet mark).  The error says to use the nftables backend.

Chains are ``NETDLB-*`` (not ``NETD-*``: the main iptables backend owns and prunes those), 28 characters at
most, so spread and endpoint chains are named by a hash of their nftables name.  The only lines touching other
chains are the jumps from ``PREROUTING``, ``OUTPUT`` and ``POSTROUTING``, added only when ``iptables-save``
showed them missing.
"""

from __future__ import annotations

import hashlib
import re

from netd.core.errors import FirewallError
from netd.firewall.lb_model import MASQ_MARK, Endpoint, LbRuleset, Spread

PREFIX = "NETDLB-"
PRE = "NETDLB-PRE"
POST = "NETDLB-POST"
STATE = "NETDLB-STATE"
TOKEN_PREFIX = "netd-lb:"
JUMPS = (("PREROUTING", PRE), ("OUTPUT", PRE), ("POSTROUTING", POST))
STICKY_REFUSED = (
    "stickiness=source-ip needs the nftables backend (iptables cannot hash a client address to a task); set "
    '[firewall] backend = "nftables", or create the service without -o stickiness=source-ip'
)

_CHAIN_LINE = re.compile(r"^:(NETDLB-[A-Za-z0-9_-]+) ")
_JUMP_LINE = re.compile(r"^-A (PREROUTING|OUTPUT|POSTROUTING) -j (NETDLB-[A-Z]+)$")
_TOKEN_LINE = re.compile(r'^-A NETDLB-STATE -m comment --comment "?netd-lb:([^" ]+)"? -j RETURN$')


def chain_name(nft_name: str, kind: str) -> str:
    return f"{PREFIX}{kind}-{hashlib.sha256(nft_name.encode()).hexdigest()[:16].upper()}"


def check_supported(rs: LbRuleset) -> None:
    if rs.sticky():
        raise FirewallError(STICKY_REFUSED)


def render_full(rs: LbRuleset, token: str, saved_nat: str) -> str:
    """Restore input that replaces every ``NETDLB-*`` chain with ``rs`` (deleting the ones it no longer has)
    and adds the missing jumps; ``saved_nat`` is the current ``iptables-save -t nat`` output."""
    check_supported(rs)
    existing = owned_chains(saved_nat)
    if rs.empty:
        return render_removal(saved_nat)
    chains = _chains(rs, token)
    lines = ["*nat"]
    lines += [f":{c} - [0:0]" for c in sorted(set(chains) | existing)]
    for c in sorted(chains):
        lines += chains[c]
    lines += [f"-X {c}" for c in sorted(existing - set(chains))]
    have = jumps(saved_nat)
    lines += [f"-I {src} 1 -j {dst}" for src, dst in JUMPS if (src, dst) not in have]
    return "\n".join([*lines, "COMMIT", ""])


def render_delta(old: LbRuleset, new: LbRuleset, token: str) -> str:
    """Restore input that rewrites only the chains that differ between ``old`` and ``new`` (declaring a chain
    flushes it) and deletes the ones ``new`` no longer has."""
    check_supported(new)
    a, b = _chains(old, ""), _chains(new, token)
    changed = sorted(c for c in b if a.get(c) != b[c])
    gone = sorted(set(a) - set(b))
    lines = ["*nat", *(f":{c} - [0:0]" for c in [*changed, *gone])]
    for c in changed:
        lines += b[c]
    lines += [f"-X {c}" for c in gone]
    return "\n".join([*lines, "COMMIT", ""])


def render_removal(saved_nat: str) -> str:
    existing = owned_chains(saved_nat)
    have = jumps(saved_nat)
    if not existing and not have:
        return ""
    lines = ["*nat"]
    lines += [f"-D {src} -j {dst}" for src, dst in JUMPS if (src, dst) in have]
    lines += [f":{c} - [0:0]" for c in sorted(existing)]
    lines += [f"-X {c}" for c in sorted(existing)]
    return "\n".join([*lines, "COMMIT", ""])


def owned_chains(saved_nat: str) -> set[str]:
    return {m.group(1) for line in saved_nat.splitlines() if (m := _CHAIN_LINE.match(line))}


def jumps(saved_nat: str) -> set[tuple[str, str]]:
    return {(m.group(1), m.group(2)) for line in saved_nat.splitlines() if (m := _JUMP_LINE.match(line))}


def token_of(saved_nat: str) -> str | None:
    for line in saved_nat.splitlines():
        if m := _TOKEN_LINE.match(line):
            return m.group(1)
    return None


# ------------------------------------------------------------------------------------------------ pieces


def _chains(rs: LbRuleset, token: str) -> dict[str, list[str]]:
    """Every NETDLB chain of ``rs`` with its rules; the state chain carries ``token``."""
    out: dict[str, list[str]] = {PRE: [], POST: []}
    out[STATE] = [f'-A {STATE} -m comment --comment "{TOKEN_PREFIX}{token}" -j RETURN']
    spread_chain = {name: chain_name(name, "S") for name in rs.spreads}
    for (vip, proto, port), name in sorted(rs.vips.items()):
        out[PRE].append(f"-A {PRE} -d {vip}/32 -p {proto} -m {proto} --dport {port} -j {spread_chain[name]}")
    for (proto, port), name in sorted(rs.published.items()):
        out[PRE].append(
            f"-A {PRE} -m addrtype --dst-type LOCAL -p {proto} -m {proto} --dport {port} -j {spread_chain[name]}"
        )
    mark = f"0x{MASQ_MARK:x}"
    out[POST] = [
        f"-A {POST} -m mark ! --mark {mark}/{mark} -j RETURN",
        f"-A {POST} -j MARK --xor-mark {mark}",
        f"-A {POST} -j SNAT --to-source {rs.snat_to}" if rs.snat_to is not None else f"-A {POST} -j MASQUERADE",
    ]
    for name, s in rs.spreads.items():
        out[spread_chain[name]] = _spread(spread_chain[name], s)
    for ep in rs.endpoints():
        c = chain_name(ep.chain, "E")
        out[c] = [f"-A {c} -p {ep.proto} -m {ep.proto} -j DNAT --to-destination {_dest(ep)}"]
    return out


def _spread(chain: str, s: Spread) -> list[str]:
    lines = [f"-A {chain} -j MARK --or-mark 0x{MASQ_MARK:x}"] if s.masquerade else []
    n = len(s.endpoints)
    for i, ep in enumerate(s.endpoints):
        target = chain_name(ep.chain, "E")
        if i == n - 1:
            lines.append(f"-A {chain} -j {target}")
        else:
            lines.append(f"-A {chain} -m statistic --mode random --probability {1 / (n - i):.11f} -j {target}")
    return lines


def _dest(ep: Endpoint) -> str:
    return f"{ep.address}:{ep.port}"
