"""Pure rendering of an ``LbRuleset`` into libnftables JSON: a full atomic batch, and a delta batch.

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
    chain <spread>    meta mark set mark | MASQ_MARK (vip, mesh); numgen random mod N vmap { 0 : goto ep-…, … }
                      (or jhash ip saddr mod N seed S for stickiness=source-ip)
    chain ep-A-tcp-P  meta l4proto tcp dnat to A:P
    chain lb-state    one rule whose comment carries the apply token (what ``in_sync`` reads back)

Nat chains see only the first packet of a connection, so the choice is made once per connection and conntrack
keeps it; the mark lives only on that packet.
"""

from __future__ import annotations

from typing import Any

from netd.firewall.lb_model import JHASH_SEED, MASQ_MARK, Endpoint, LbRuleset, Spread

FAMILY = "ip"
TABLE = "netd-lb"
STATE_CHAIN = "lb-state"
TOKEN_PREFIX = "netd-lb:"
VIPS = "vips"
PUBLISHED = "published"

Json = dict[str, Any]
_BASE = {"family": FAMILY, "table": TABLE}
_HOOKS = (("prerouting", "nat", -100), ("output", "nat", -100), ("postrouting", "nat", 100))


def render_full(rs: LbRuleset, token: str) -> Json:
    """One batch that replaces the whole table (``add``+``delete``+``add``: atomic, and never fails on a missing
    table).  An empty ruleset renders to deleting the table (the backend only sends it when the table exists)."""
    ref = {"family": FAMILY, "name": TABLE}
    cmds: list[Json] = [{"add": {"table": ref}}, {"delete": {"table": ref}}]
    if rs.empty:
        return {"nftables": cmds}
    cmds.append({"add": {"table": ref}})
    cmds.append(_map(VIPS, ["ipv4_addr", "inet_proto", "inet_service"]))
    cmds.append(_map(PUBLISHED, ["inet_proto", "inet_service"]))
    for ep in sorted(rs.endpoints()):
        cmds += _endpoint_chain(ep)
    for name in sorted(rs.spreads):
        cmds += [_add_chain(name), *_spread_rules(rs.spreads[name])]
    cmds += _elements("add", VIPS, [_vip_elem(k, c) for k, c in sorted(rs.vips.items())])
    cmds += _elements("add", PUBLISHED, [_pub_elem(k, c) for k, c in sorted(rs.published.items())])
    for hook, kind, prio in _HOOKS:
        cmds.append(
            {
                "add": {
                    "chain": {**_BASE, "name": hook, "type": kind, "hook": hook, "prio": prio, "policy": "accept"}
                }
            }
        )
        for expr in _hook_rules(hook):
            cmds.append(_rule(hook, expr))
    cmds += _state(token)
    return {"nftables": cmds}


def render_delta(old: LbRuleset, new: LbRuleset, token: str) -> Json:
    """The batch that turns the kernel's ``old`` into ``new`` touching only what differs: new endpoint chains,
    the spread chains whose endpoint list changed (flushed and refilled), the changed map elements, then the
    deletion of what nothing references any more.  Its size follows the change, not the ruleset."""
    cmds: list[Json] = []
    old_eps, new_eps = old.endpoints(), new.endpoints()
    for ep in sorted(new_eps - old_eps):
        cmds += _endpoint_chain(ep)
    for name in sorted(new.spreads):
        s = new.spreads[name]
        if name not in old.spreads:
            cmds += [_add_chain(name), *_spread_rules(s)]
        elif old.spreads[name] != s:
            cmds += [{"flush": {"chain": {**_BASE, "name": name}}}, *_spread_rules(s)]
    gone_v = [k for k, c in old.vips.items() if new.vips.get(k) != c]
    gone_p = [k for k, c in old.published.items() if new.published.get(k) != c]
    cmds += _elements("delete", VIPS, [_vip_key(k) for k in sorted(gone_v)])
    cmds += _elements("delete", PUBLISHED, [_pub_key(k) for k in sorted(gone_p)])
    add_v = sorted((k, c) for k, c in new.vips.items() if old.vips.get(k) != c)
    add_p = sorted((k, c) for k, c in new.published.items() if old.published.get(k) != c)
    cmds += _elements("add", VIPS, [_vip_elem(k, c) for k, c in add_v])
    cmds += _elements("add", PUBLISHED, [_pub_elem(k, c) for k, c in add_p])
    for name in sorted(set(old.spreads) - set(new.spreads)):
        cmds.append({"delete": {"chain": {**_BASE, "name": name}}})
    for ep in sorted(old_eps - new_eps):
        cmds.append({"delete": {"chain": {**_BASE, "name": ep.chain}}})
    cmds.append({"flush": {"chain": {**_BASE, "name": STATE_CHAIN}}})
    cmds.append(_state(token)[1])
    return {"nftables": cmds}


def token_of(listing: Any) -> str | None:
    """The apply token in the JSON listing of the state chain, or None."""
    for obj in listing.get("nftables", []) if isinstance(listing, dict) else []:
        comment = (obj.get("rule") or {}).get("comment") or ""
        if comment.startswith(TOKEN_PREFIX):
            return str(comment[len(TOKEN_PREFIX) :])
    return None


def list_state_cmd() -> Json:
    return {"nftables": [{"list": {"chain": {**_BASE, "name": STATE_CHAIN}}}]}


def delete_table_cmd() -> Json:
    return {"nftables": [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]}


# ------------------------------------------------------------------------------------------------ pieces


def _map(name: str, key: list[str]) -> Json:
    return {"add": {"map": {**_BASE, "name": name, "type": key, "map": "verdict"}}}


def _add_chain(name: str) -> Json:
    return {"add": {"chain": {**_BASE, "name": name}}}


def _rule(chain: str, expr: list[Json], comment: str | None = None) -> Json:
    body: Json = {**_BASE, "chain": chain, "expr": expr}
    if comment is not None:
        body["comment"] = comment
    return {"add": {"rule": body}}


def _state(token: str) -> list[Json]:
    return [_add_chain(STATE_CHAIN), _rule(STATE_CHAIN, [{"return": None}], TOKEN_PREFIX + token)]


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _payload(proto: str, fld: str) -> Json:
    return {"payload": {"protocol": proto, "field": fld}}


def _match(left: Json, right: Any) -> Json:
    return {"match": {"op": "==", "left": left, "right": right}}


def _hook_rules(hook: str) -> list[list[Json]]:
    if hook == "postrouting":
        masked = {"&": [_meta("mark"), MASQ_MARK]}
        clear = {"mangle": {"key": _meta("mark"), "value": {"&": [_meta("mark"), 0xFFFFFFFF ^ MASQ_MARK]}}}
        return [[_match(masked, MASQ_MARK), clear, {"masquerade": None}]]
    proto_port = [_meta("l4proto"), _payload("th", "dport")]
    vips = [{"vmap": {"key": {"concat": [_payload("ip", "daddr"), *proto_port]}, "data": "@" + VIPS}}]
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    mesh = [local, {"vmap": {"key": {"concat": proto_port}, "data": "@" + PUBLISHED}}]
    return [vips, mesh]


def _spread_rules(s: Spread) -> list[Json]:
    out: list[Json] = []
    if s.masquerade:
        out.append(
            _rule(s.chain, [{"mangle": {"key": _meta("mark"), "value": {"|": [_meta("mark"), MASQ_MARK]}}}])
        )
    n = len(s.endpoints)
    pick: Json
    if s.sticky:
        pick = {"jhash": {"expr": _payload("ip", "saddr"), "mod": n, "seed": JHASH_SEED, "offset": 0}}
    else:
        pick = {"numgen": {"mode": "random", "mod": n, "offset": 0}}
    slots = [[i, {"goto": {"target": ep.chain}}] for i, ep in enumerate(s.endpoints)]
    out.append(_rule(s.chain, [{"vmap": {"key": pick, "data": {"set": slots}}}]))
    return out


def _endpoint_chain(ep: Endpoint) -> list[Json]:
    dnat = {"dnat": {"addr": str(ep.address), "port": ep.port}}
    return [_add_chain(ep.chain), _rule(ep.chain, [_match(_meta("l4proto"), ep.proto), dnat])]


def _elements(verb: str, name: str, elems: list[Any]) -> list[Json]:
    if not elems:
        return []
    return [{verb: {"element": {**_BASE, "name": name, "elem": elems}}}]


def _vip_key(k: tuple[Any, str, int]) -> Json:
    return {"concat": [str(k[0]), k[1], k[2]]}


def _pub_key(k: tuple[str, int]) -> Json:
    return {"concat": [k[0], k[1]]}


def _vip_elem(k: tuple[Any, str, int], chain: str) -> list[Any]:
    return [_vip_key(k), {"goto": {"target": chain}}]


def _pub_elem(k: tuple[str, int], chain: str) -> list[Any]:
    return [_pub_key(k), {"goto": {"target": chain}}]
