"""Pure rendering of an ``LbRuleset`` into nftables commands: a full atomic batch, and a delta batch.

netd's LB lives in its own table, ``ip netd-lb``, beside (never inside) ``inet netd``:

* its own table lets the LB be replaced, checked and removed without touching published ports, isolation and
  masquerade of the bridge networks (and the other way round), and lets each side keep its own delta logic;
* ``ip`` rather than ``inet``: services' VIPs, the ingress network and the overlay are IPv4, as in Docker
  swarm; in an ``ip`` table ``dnat to A:P``, ``jhash ip saddr`` and ``fib daddr type local`` need no family
  qualifiers.  An IPv6 service would get a sibling ``ip6 netd-lb`` table from the same model.

Layout (kube-proxy's nftables mode, with the routing mesh of Docker's ingress)::

    map vips       { ipv4_addr . inet_proto . inet_service : verdict }   VIP . tcp . 80 : goto vip-web-net-tcp-80
    map published  { inet_proto . inet_service : verdict }               tcp . 8080     : goto mesh-web-tcp-8080
    chain prerouting  (nat, dstnat)   ip daddr . meta l4proto . th dport vmap @vips
                                      fib daddr type local meta l4proto . th dport vmap @published
    chain output      (nat, dstnat)   the same, for connections made on the node itself
    chain postrouting (nat, srcnat)   meta mark & MASQ_MARK == MASQ_MARK  clear the bit, masquerade
                                      (snat to the node's ingress address when the ruleset has one)
    map <spread>-slots { typeof numgen random mod 1 : verdict }   0 : goto ep-…, 1 : goto ep-…
    chain <spread>    meta mark set mark | MASQ_MARK (vip, mesh); numgen random mod N vmap @<spread>-slots
                      (jhash ip saddr mod N seed S for stickiness=source-ip)
    chain ep-A-tcp-P  meta l4proto tcp dnat to A:P
    chain lb-state    one rule whose comment carries the apply token (what ``in_sync`` reads back)

The slots live in a named map per spread, not in the rule (kube-proxy writes them into the rule as an anonymous
map): a task joining a 1000-task service is one element, one endpoint chain and a new rule of two expressions,
instead of a rule listing 1000 chains.  Nat chains see only the first packet of a connection, so the choice is
made once per connection and conntrack keeps it; the mark lives only on that packet.

**Why native syntax and not libnftables JSON** (which ``nftables.py`` uses): a map keyed by ``numgen``/``jhash``
needs a ``typeof`` key (their values are untyped 32-bit integers: a ``type mark`` map is refused as a datatype
mismatch, ``type integer`` as unqualified), and nft 1.0.6 (Debian 12) cannot express ``typeof`` in JSON (1.1
can).  The batch goes through the same libnftables context (``cmd``) in one call, so it is just as atomic;
what netd reads back (the state chain) is still JSON.  Every name written here is built from validated service
and network names, addresses and numbers: no free text reaches the parser.
"""

from __future__ import annotations

from typing import Any

from netd.firewall.lb_model import JHASH_SEED, MASQ_MARK, Endpoint, LbRuleset, Slots, Spread

FAMILY = "ip"
TABLE = "netd-lb"
STATE_CHAIN = "lb-state"
TOKEN_PREFIX = "netd-lb:"
VIPS = "vips"
PUBLISHED = "published"
T = f"{FAMILY} {TABLE}"

Json = dict[str, Any]
# dstnat, dstnat, srcnat - 1: before netd's own masquerade (table inet netd, srcnat), so a routing-mesh
# connection from a netd network's endpoint is SNAT'd to the node's ingress address, not masqueraded
_HOOKS = (("prerouting", -100), ("output", -100), ("postrouting", 99))


def render_full(rs: LbRuleset, slots: Slots, token: str) -> str:
    """One batch that replaces the whole table (``add``+``delete``+``add``: atomic, and never fails on a missing
    table).  An empty ruleset renders to deleting the table."""
    out = [f"add table {T}", f"delete table {T}"]
    if rs.empty:
        return _text(out)
    out.append(f"add table {T}")
    out.append(f"add map {T} {VIPS} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}")
    out.append(f"add map {T} {PUBLISHED} {{ type inet_proto . inet_service : verdict; }}")
    for ep in sorted(rs.endpoints()):
        out += _endpoint_chain(ep)
    for name in sorted(rs.spreads):
        out += _add_spread(rs.spreads[name], slots[name])
    out += _elements("add", VIPS, [_vip_elem(k, c) for k, c in sorted(rs.vips.items())])
    out += _elements("add", PUBLISHED, [_pub_elem(k, c) for k, c in sorted(rs.published.items())])
    for hook, prio in _HOOKS:
        out.append(f"add chain {T} {hook} {{ type nat hook {hook} priority {prio}; policy accept; }}")
        out += [f"add rule {T} {hook} {r}" for r in _hook_rules(hook, rs)]
    out += _state(token)
    return _text(out)


def render_delta(old: LbRuleset, old_slots: Slots, new: LbRuleset, new_slots: Slots, token: str) -> str:
    """The batch that turns the kernel's ``old`` into ``new`` touching only what differs: new endpoint chains,
    the slots (map elements) that changed, a spread's rule only when its size changed, the changed dispatch
    elements, then the deletion of what nothing references any more.  Its size follows the change, not the
    ruleset nor the size of a spread."""
    out: list[str] = []
    old_eps, new_eps = old.endpoints(), new.endpoints()
    for ep in sorted(new_eps - old_eps):
        out += _endpoint_chain(ep)
    for name in sorted(new.spreads):
        s = new.spreads[name]
        if name not in old.spreads:
            out += _add_spread(s, new_slots[name])
            continue
        o, a, b = old.spreads[name], old_slots[name], new_slots[name]
        if o == s and a == b:  # tuple comparisons in C: the spreads a change does not touch cost ~nothing
            continue
        stale = [str(i) for i in range(len(a)) if i >= len(b) or a[i] != b[i]]
        fresh = [_slot(i, b[i]) for i in range(len(b)) if i >= len(a) or a[i] != b[i]]
        out += _elements("delete", _slot_map(name), stale)
        out += _elements("add", _slot_map(name), fresh)
        if (len(a), o.sticky, o.kind) != (len(b), s.sticky, s.kind):
            out += [f"flush chain {T} {name}", *_spread_rules(s, len(b))]
    gone_v = [_vip_key(k) for k, c in sorted(old.vips.items()) if new.vips.get(k) != c]
    gone_p = [_pub_key(k) for k, c in sorted(old.published.items()) if new.published.get(k) != c]
    out += _elements("delete", VIPS, gone_v)
    out += _elements("delete", PUBLISHED, gone_p)
    out += _elements("add", VIPS, [_vip_elem(k, c) for k, c in sorted(new.vips.items()) if old.vips.get(k) != c])
    add_p = [_pub_elem(k, c) for k, c in sorted(new.published.items()) if old.published.get(k) != c]
    out += _elements("add", PUBLISHED, add_p)
    for name in sorted(set(old.spreads) - set(new.spreads)):
        out += [f"delete chain {T} {name}", f"delete map {T} {_slot_map(name)}"]
    out += [f"delete chain {T} {ep.chain}" for ep in sorted(old_eps - new_eps)]
    if old.snat_to != new.snat_to:
        out += [
            f"flush chain {T} postrouting",
            *(f"add rule {T} postrouting {r}" for r in _hook_rules("postrouting", new)),
        ]
    out += [f"flush chain {T} {STATE_CHAIN}", _state(token)[1]]
    return _text(out)


def token_of(listing: Any) -> str | None:
    """The apply token in the JSON listing of the state chain, or None."""
    for obj in listing.get("nftables", []) if isinstance(listing, dict) else []:
        comment = (obj.get("rule") or {}).get("comment") or ""
        if comment.startswith(TOKEN_PREFIX):
            return str(comment[len(TOKEN_PREFIX) :])
    return None


def list_state_cmd() -> Json:
    return {"nftables": [{"list": {"chain": {"family": FAMILY, "table": TABLE, "name": STATE_CHAIN}}}]}


def delete_table_cmd() -> str:
    return f"delete table {T}\n"


# ------------------------------------------------------------------------------------------------ pieces


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def _state(token: str) -> list[str]:
    return [f"add chain {T} {STATE_CHAIN}", f'add rule {T} {STATE_CHAIN} return comment "{TOKEN_PREFIX}{token}"']


def _hook_rules(hook: str, rs: LbRuleset) -> list[str]:
    if hook == "postrouting":
        m, keep = f"0x{MASQ_MARK:08x}", f"0x{0xFFFFFFFF ^ MASQ_MARK:08x}"
        nat = f"snat to {rs.snat_to}" if rs.snat_to is not None else "masquerade"
        return [f"meta mark & {m} == {m} meta mark set meta mark & {keep} {nat}"]
    return [
        f"ip daddr . meta l4proto . th dport vmap @{VIPS}",
        f"fib daddr type local meta l4proto . th dport vmap @{PUBLISHED}",
    ]


def _slot_map(chain: str) -> str:
    return chain + "-slots"


def _slot(i: int, ep: Endpoint) -> str:
    return f"{i} : goto {ep.chain}"


def _add_spread(s: Spread, slots: tuple[Endpoint, ...]) -> list[str]:
    # numgen/jhash yield untyped 32-bit integers: the map's key must be declared by typeof (see the module doc)
    out = [f"add map {T} {_slot_map(s.chain)} {{ typeof numgen random mod 1 : verdict; }}"]
    out += _elements("add", _slot_map(s.chain), [_slot(i, ep) for i, ep in enumerate(slots)])
    return [*out, f"add chain {T} {s.chain}", *_spread_rules(s, len(slots))]


def _spread_rules(s: Spread, n: int) -> list[str]:
    out: list[str] = []
    if s.masquerade:
        out.append(f"add rule {T} {s.chain} meta mark set meta mark | 0x{MASQ_MARK:08x}")
    pick = f"jhash ip saddr mod {n} seed 0x{JHASH_SEED:08x}" if s.sticky else f"numgen random mod {n}"
    out.append(f"add rule {T} {s.chain} {pick} vmap @{_slot_map(s.chain)}")
    return out


def _endpoint_chain(ep: Endpoint) -> list[str]:
    return [
        f"add chain {T} {ep.chain}",
        f"add rule {T} {ep.chain} meta l4proto {ep.proto} dnat to {ep.address}:{ep.port}",
    ]


def _elements(verb: str, name: str, elems: list[str]) -> list[str]:
    return [f"{verb} element {T} {name} {{ {', '.join(elems)} }}"] if elems else []


def _vip_key(k: tuple[Any, str, int]) -> str:
    return f"{k[0]} . {k[1]} . {k[2]}"


def _pub_key(k: tuple[str, int]) -> str:
    return f"{k[0]} . {k[1]}"


def _vip_elem(k: tuple[Any, str, int], chain: str) -> str:
    return f"{_vip_key(k)} : goto {chain}"


def _pub_elem(k: tuple[str, int], chain: str) -> str:
    return f"{_pub_key(k)} : goto {chain}"
