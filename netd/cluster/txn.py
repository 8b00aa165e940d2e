"""Transactions in netd's own terms (compares and operations on text keys), translated to aetcd's in one place.

``absent``/``present`` compare one key; ``empty_prefix``/``unchanged_since`` compare every key under a prefix
(etcd range compares: an empty range compares as version 0 / mod revision 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aetcd import rpc, transactions
from aetcd.utils import prefix_range_end


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True)
class Cmp:
    key: str
    target: Literal["version", "mod", "create", "value"]
    op: Literal["==", "!=", "<", ">"]
    value: int | bytes
    prefix: bool = False  # compare every key under ``key`` (a range compare; an empty range compares as 0)


def absent(key: str) -> Cmp:
    return Cmp(key, "version", "==", 0)


def present(key: str) -> Cmp:
    return Cmp(key, "version", ">", 0)


def empty_prefix(prefix: str) -> Cmp:
    """No key exists under ``prefix``."""
    return Cmp(prefix, "version", "==", 0, prefix=True)


def unchanged_since(prefix: str, revision: int) -> Cmp:
    """No key under ``prefix`` was created or changed after ``revision`` (deletions are not seen)."""
    return Cmp(prefix, "mod", "<", revision + 1, prefix=True)


def mod_is(key: str, revision: int) -> Cmp:
    return Cmp(key, "mod", "==", revision)


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True)
class Get:
    key: str


@dataclass
class TxnResult:
    succeeded: bool
    gets: list[KV | None] = field(default_factory=list)  # one per Get of the branch that ran, in order


_TARGETS = {
    "version": transactions.Version,
    "mod": transactions.Mod,
    "create": transactions.Create,
    "value": transactions.Value,
}
_OPS = {"==": rpc.Compare.EQUAL, "!=": rpc.Compare.NOT_EQUAL, "<": rpc.Compare.LESS, ">": rpc.Compare.GREATER}


def to_compare(c: Cmp) -> Any:
    key = c.key.encode()
    out = _TARGETS[c.target](key, prefix_range_end(key) if c.prefix else None)
    out.value, out.op = c.value, _OPS[c.op]
    return out


def to_op(o: Put | Delete | Get) -> Any:
    if isinstance(o, Put):
        return transactions.Put(o.key.encode(), o.value, lease=o.lease or None)
    if isinstance(o, Delete):
        key = o.key.encode()
        return transactions.Delete(key, prefix_range_end(key) if o.prefix else None)
    return transactions.Get(o.key.encode())
