"""The published-port maps of the ruleset, kept up to date by the endpoints that changed.

``build_ruleset`` builds everything per network (tens of objects) but the DNAT maps hold one element per
published port: rebuilding them from every endpoint on each connect made a connect with ``-p`` cost O(ports).
A ``PortMaps`` remembers each endpoint's entries (by the identity of its ``Endpoint`` object: the desired state
is copy-on-write, an unchanged endpoint is the same object in the next state) and each map's elements, so a
change costs what it touched: the endpoints the state's ``EndpointIndex`` names as changed since the last
update (else one pass of identity checks over the endpoints), the changed endpoints' entries,
and a new element tuple only for a map that changed.  Unchanged maps and elements stay the same objects, so
comparing two rulesets and computing the firewall delta stay cheap too.

Without a ``PortMaps`` (``build_ruleset`` called alone) a fresh one is used: the same code either way.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from netd.core.epindex import EndpointIndex
from netd.core.model import DesiredState, Endpoint
from netd.core.ports import Published, entries_of
from netd.core.ruleset import DNAT_MAPS, Element, NamedSet, SetKey

Key = tuple[str, ...]
_KEY: tuple[SetKey, ...] = ("inet_proto", "inet_service")


def _where(e: Published) -> tuple[str, Key]:
    """The map an entry goes to and its key there."""
    name = DNAT_MAPS[(e.version, e.host_ip is not None)]
    k = (e.proto, str(e.host_port))
    return name, ((e.host_ip, *k) if e.host_ip is not None else k)


class _Map:
    """One DNAT map: key -> {endpoint id: value}; the element is the value of the greatest endpoint id (the
    last writer when the endpoints are taken in id order, as ``ports.published`` sorts them)."""

    def __init__(self, name: str, key: tuple[SetKey, ...], value: tuple[SetKey, SetKey]) -> None:
        self.name, self.key, self.value = name, key, value
        self.holders: dict[Key, dict[str, tuple[str, str]]] = {}
        self.keys: list[Key] = []  # sorted
        self.elements: dict[Key, Element] = {}
        self.built: NamedSet | None = None

    def add(self, k: Key, ep_id: str, value: tuple[str, str]) -> None:
        held = self.holders.get(k)
        if held is None:
            held = self.holders[k] = {}
            bisect.insort(self.keys, k)
        held[ep_id] = value
        self._elect(k)

    def remove(self, k: Key, ep_id: str) -> None:
        held = self.holders.get(k)
        if held is None or held.pop(ep_id, None) is None:
            return
        if not held:
            del self.holders[k], self.elements[k]
            del self.keys[bisect.bisect_left(self.keys, k)]
            self.built = None
        else:
            self._elect(k)

    def _elect(self, k: Key) -> None:
        held = self.holders[k]
        value = held[max(held)]
        old = self.elements.get(k)
        if old is None or old.value != value:
            self.elements[k] = Element(k, value)
            self.built = None

    def named_set(self) -> NamedSet:
        if self.built is None:
            elems = self.elements
            self.built = NamedSet(self.name, self.key, tuple(elems[k] for k in self.keys), value=self.value)
        return self.built


class PortMaps:
    def __init__(self) -> None:
        self._usable: frozenset[str] | None = None
        self._reset()

    def _reset(self) -> None:
        self._serial: int | None = None  # the endpoint index of the state caught up with, when given
        self._eps: dict[str, tuple[Endpoint, tuple[Published, ...]]] = {}
        self._net_of: dict[str, str] = {}
        self._counts: dict[str, list[int]] = {}  # network id -> [entries, IPv4 entries]
        self._maps: dict[str, _Map] = {}
        for (v, by_daddr), name in DNAT_MAPS.items():
            addr: SetKey = "ipv4_addr" if v == 4 else "ipv6_addr"
            self._maps[name] = _Map(name, (addr, *_KEY) if by_daddr else _KEY, (addr, "inet_service"))

    def update(self, state: DesiredState, usable: Iterable[str], index: EndpointIndex | None = None) -> None:
        """Catch up with ``state``: the endpoints whose object changed, appeared or went; all of them when the
        set of networks that may publish changed.  ``index`` (the endpoint index of ``state``) names the
        endpoints changed since the state caught up with last, if it knows: then only those are looked at."""
        usable_now = frozenset(usable)
        if usable_now != self._usable:
            self._reset()
            self._usable = usable_now
        seen = self._eps
        endpoints = state.endpoints
        ours = index is not None and index.state is state
        since = index.changes_since(self._serial) if index is not None and ours else None
        self._serial = index.serial if index is not None and ours else None
        if since is not None:
            for ep_id in since:
                ep = endpoints.get(ep_id)
                old = seen.get(ep_id)
                if ep is None:
                    if old is not None:
                        self._drop(ep_id)
                        del seen[ep_id]
                elif old is None or old[0] is not ep:
                    self._put(ep_id, ep)
            return
        for ep_id, ep in endpoints.items():
            old = seen.get(ep_id)
            if old is None or old[0] is not ep:
                self._put(ep_id, ep)
        if len(seen) != len(endpoints):
            for ep_id in seen.keys() - endpoints.keys():
                self._drop(ep_id)
                del seen[ep_id]

    def publishes(self, net_id: str) -> bool:
        counts = self._counts.get(net_id)
        return counts is not None and counts[0] > 0

    def publishes_v4(self, net_id: str) -> bool:
        counts = self._counts.get(net_id)
        return counts is not None and counts[1] > 0

    @property
    def any(self) -> bool:
        return any(c[0] for c in self._counts.values())

    def named_sets(self) -> tuple[NamedSet, ...]:
        return tuple(m.named_set() for m in self._maps.values())

    def _put(self, ep_id: str, ep: Endpoint) -> None:
        self._drop(ep_id)
        usable = self._usable or frozenset()
        entries = entries_of(ep) if ep.ports and ep.network in usable else ()
        self._eps[ep_id] = (ep, entries)
        if not entries:
            return
        self._net_of[ep_id] = ep.network
        counts = self._counts.setdefault(ep.network, [0, 0])
        for e in entries:
            name, k = _where(e)
            self._maps[name].add(k, ep_id, (e.addr, str(e.port)))
            counts[0] += 1
            counts[1] += e.version == 4

    def _drop(self, ep_id: str) -> None:
        old = self._eps.get(ep_id)
        if old is None or not old[1]:
            return
        counts = self._counts[self._net_of.pop(ep_id)]
        for e in old[1]:
            name, k = _where(e)
            self._maps[name].remove(k, ep_id)
            counts[0] -= 1
            counts[1] -= e.version == 4
