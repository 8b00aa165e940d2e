"""Lookups over a desired state's endpoints (by namespace, network, published port, ...) that cost O(1) per change.

A connect used to find its namespace's endpoints, the published ports that can clash, the namespaces whose
resolv.conf to write ... by scanning every endpoint: at N = 1000 that was most of its Python time.  An
``EndpointIndex`` describes one state (``index.state``) and is never changed once made: the next state's is
``derive``d from it and the endpoint ids the change touched, copying only the top-level tables (one C-level
dict copy each) and the buckets those ids are in.  ``build`` computes one from scratch; ``derive`` gives the
same tables, in the same order (tests/unit/core/test_epindex.py checks it over random changes).

Each bucket holds endpoint ids in the order of ``state.endpoints`` (the order they were connected), given
that the derived state is a ``copy_for_change`` of the index's state (new ids go to the end, replaced ones
keep their place) and that an endpoint keeps its keys (namespace, network, ports, container) for its life,
as netd's endpoints do: a replaced endpoint (a new default_route, a new address) keeps its place.

The index also remembers the last changes (``changes_since``): a consumer that caught up with an earlier
state (the firewall's published-port maps) catches up with this one by the endpoints changed since.

Pure: no kernel imports.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, KeysView
from typing import Literal

import structlog

from netd.core.model import DesiredState, Endpoint

log = structlog.get_logger()

Table = Literal["target", "netns", "inode", "network", "port", "proto", "container", "links"]
TABLES: tuple[Table, ...] = ("target", "netns", "inode", "network", "port", "proto", "container", "links")
Bucket = dict[str, None]  # endpoint ids, in the state's order
HISTORY = 16  # changes remembered for changes_since

_serials = itertools.count(1)


def keys_of(ep: Endpoint) -> list[tuple[Table, Hashable]]:
    """Where an endpoint is listed: the keys it never changes during its life."""
    out: list[tuple[Table, Hashable]] = [("target", ep.target), ("network", ep.network)]
    if ep.netns is not None:
        out.append(("netns", ep.netns))
    elif ep.netns_inode is not None:  # a path's namespace, by its inode at connect time
        out.append(("inode", ep.netns_inode))
    for m in ep.ports:
        out.append(("port", (m.proto, m.host_port)))
        out.append(("proto", m.proto))
    if ep.container_id is not None:
        out.append(("container", ep.container_id))
    if ep.links:
        out.append(("links", ""))
    return out


class EndpointIndex:
    """The endpoint ids of one state by key; see the module docstring."""

    __slots__ = ("_back", "serial", "state", "tables")

    def __init__(
        self,
        state: DesiredState,
        tables: dict[Table, dict[Hashable, Bucket]],
        back: tuple[tuple[int, frozenset[str] | None], ...] = (),
    ) -> None:
        self.state = state
        self.tables = tables
        self.serial = next(_serials)  # names this state's content among the indexes made in this process
        # (serial of an earlier index, endpoints changed from its state to the next), most recent first
        self._back = back

    @classmethod
    def build(cls, state: DesiredState) -> EndpointIndex:
        tables: dict[Table, dict[Hashable, Bucket]] = {t: {} for t in TABLES}
        for ep_id, ep in state.endpoints.items():
            for table, key in keys_of(ep):
                tables[table].setdefault(key, {})[ep_id] = None
        return cls(state, tables)

    def derive(self, after: DesiredState, changed: Iterable[str] | None) -> EndpointIndex:
        """The index of ``after``, a ``copy_for_change`` of ``self.state`` in which only the endpoints
        ``changed`` differ (None: any may; then it is built anew)."""
        if changed is None:
            fresh = EndpointIndex.build(after)
            fresh._back = ((self.serial, None), *self._back)[:HISTORY]
            return fresh
        changed = frozenset(changed)
        before = self.state.endpoints
        now = after.endpoints
        tables = {t: dict(m) for t, m in self.tables.items()}  # C-level copies; buckets copied when touched
        copied: set[tuple[Table, Hashable]] = set()

        def bucket(table: Table, key: Hashable) -> Bucket:
            if (table, key) in copied:
                return tables[table][key]
            copied.add((table, key))
            b = tables[table][key] = dict(tables[table].get(key) or {})
            return b

        added: list[str] = []
        delta = 0  # endpoints added minus removed
        for ep_id in changed:
            old, new = before.get(ep_id), now.get(ep_id)
            if old is new:
                continue
            delta += (new is not None) - (old is not None)
            old_keys = keys_of(old) if old is not None else []
            if new is not None and old_keys == keys_of(new):
                continue  # replaced in place: same keys, same position
            for table, key in old_keys:
                b = bucket(table, key)
                b.pop(ep_id, None)
                if not b:
                    del tables[table][key]
                    copied.discard((table, key))
            if new is not None:
                added.append(ep_id)
        if len(before) + delta != len(now):  # ``changed`` missed an endpoint that came or went: never guess
            log.error("endpoint_index_change_incomplete", named=len(changed), before=len(before), after=len(now))
            return self.derive(after, None)
        if len(added) > 1:  # their order in ``after`` (rare: a connect adds one)
            order = list(now)
            added.sort(key=order.index)
        for ep_id in added:
            for table, key in keys_of(now[ep_id]):
                bucket(table, key)[ep_id] = None
        return EndpointIndex(after, tables, ((self.serial, changed), *self._back)[:HISTORY])

    def changes_since(self, serial: int | None) -> frozenset[str] | None:
        """The endpoint ids changed from the state of the index ``serial`` to this one's; None when unknown
        (not among the last changes, or one of them changed anything)."""
        if serial == self.serial:
            return frozenset()
        out: set[str] = set()
        for before, changed in self._back:
            if changed is None:
                return None
            out |= changed
            if before == serial:
                return frozenset(out)
        return None

    # -- lookups (endpoints of ``self.state``, in its order) -----------------------------------------------------

    def ids(self, table: Table, key: Hashable) -> KeysView[str]:
        return (self.tables[table].get(key) or {}).keys()

    def endpoints(self, table: Table, key: Hashable) -> list[Endpoint]:
        eps = self.state.endpoints
        return [eps[i] for i in self.tables[table].get(key) or ()]

    def union(self, buckets: Iterable[tuple[Table, Hashable]]) -> list[Endpoint]:
        """The endpoints of several buckets, each once, in the state's order."""
        tables = self.tables
        lists = [ids for table, key in buckets if (ids := tables[table].get(key))]
        eps = self.state.endpoints
        if len(lists) <= 1:
            return [eps[i] for i in (lists[0] if lists else ())]
        merged = list(dict.fromkeys(i for part in lists for i in part))
        order = list(eps)  # C-level; ids are few (a namespace connected by name and by path, two ports)
        merged.sort(key=order.index)
        return [eps[i] for i in merged]

    def in_target(self, target: str) -> list[Endpoint]:
        """``DesiredState.endpoints_in``."""
        return self.endpoints("target", target)

    def of_network(self, net_id: str) -> list[Endpoint]:
        """``DesiredState.endpoints_of``."""
        return self.endpoints("network", net_id)

    def netns_names(self) -> KeysView[Hashable]:
        """The netd netns that have endpoints."""
        return self.tables["netns"].keys()

    @property
    def has_links(self) -> bool:
        """Some endpoint has a ``--link``."""
        return bool(self.tables["links"])
