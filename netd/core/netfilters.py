"""Docker's network filters (pure), one implementation for netd's ``GET /v1/networks?filters=`` (``netd-ctl
network ls --filter``) and the Docker Engine API's ``GET /networks`` and ``POST /networks/prune``.

Docker's rules (moby's ``filters`` package): the values of one key are OR'ed and keys are AND'ed, except
``label``, whose values must all match (``label!``: none may); ``name`` is a substring, ``id`` a prefix, a label
``KEY`` or ``KEY=VALUE``, ``type`` ``builtin`` (the default bridge, ``host``, ``none``) or ``custom``, ``scope``
``local`` (netd's networks), ``dangling`` ``true``/``false`` (a custom network without endpoints), ``until`` a
duration ago (``24h``), a Unix time or an RFC 3339 time.  Both forms of values are taken: ``{"driver":
["bridge"]}`` and ``{"driver": {"bridge": true}}`` (what the docker CLI and older clients send).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from netd.core.errors import InvalidError

LIST_KEYS = ("dangling", "driver", "id", "label", "name", "scope", "type")
PRUNE_KEYS = ("until", "label", "label!")

Filters = dict[str, list[str]]


@dataclass(frozen=True)
class Subject:
    """What a filter looks at in a network."""

    name: str
    id: str
    driver: str
    labels: Mapping[str, str]
    builtin: bool  # the default bridge, host, none
    endpoints: int = 0
    scope: str = "local"
    created: str = ""  # ISO 8601, "" when unknown


def _check_values(key: str, values: list[str]) -> None:
    for v in values:
        if key == "type" and v not in ("custom", "builtin"):
            raise InvalidError(f"invalid filter: 'type'='{v}' (use custom or builtin)", field="filters")
        if key == "dangling" and v not in ("true", "false", "1", "0"):
            raise InvalidError(f"invalid filter 'dangling={v}' (use true or false)", field="filters")


def parse_filters(data: Any, allowed: tuple[str, ...] = LIST_KEYS) -> Filters:
    """A decoded ``filters`` object, checked: every key known, every value a string (in a list, or the keys
    set to true of an object)."""
    if not isinstance(data, dict):
        raise InvalidError(
            'invalid filter: expected a JSON object of lists, e.g. {"driver": ["bridge"]}', field="filters"
        )
    out: Filters = {}
    for key, value in data.items():
        if key not in allowed:
            raise InvalidError(
                f"invalid filter '{key}'; use one of {', '.join(allowed)} (e.g. --filter driver=bridge)",
                field="filters",
            )
        if isinstance(value, dict) and all(isinstance(v, str) for v in value):
            values = [k for k, on in value.items() if on]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            values = list(value)
        else:
            raise InvalidError(f"invalid filter '{key}': expected a list of strings", field="filters")
        _check_values(key, values)
        out[key] = values
    return out


def _label(labels: Mapping[str, str], want: str) -> bool:
    key, eq, value = want.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _one(s: Subject, key: str, v: str) -> bool:
    if key == "driver":
        return s.driver == v
    if key == "name":
        return v in s.name
    if key == "id":
        return s.id.startswith(v)
    if key == "scope":
        return s.scope == v
    if key == "type":
        return (v == "builtin") == s.builtin
    raise AssertionError(key)


def matches(s: Subject, filters: Filters, now: datetime | None = None) -> bool:
    for key, values in filters.items():
        if not values:
            continue
        _check_values(key, values)
        if key == "label":
            if not all(_label(s.labels, v) for v in values):
                return False
        elif key == "label!":
            if any(_label(s.labels, v) for v in values):
                return False
        elif key == "dangling":
            if (not s.builtin and s.endpoints == 0) != (values[-1] in ("true", "1")):
                return False
        elif key == "until":
            at = now or datetime.now(UTC)
            if s.created and any(datetime.fromisoformat(s.created) >= until(v, at) for v in values):
                return False
        elif not any(_one(s, key, v) for v in values):
            return False
    return True


def until(text: str, now: datetime) -> datetime:
    """Docker's ``until``: a duration ago (``24h``, ``90m``, ``30s``), a Unix time or an RFC 3339 time."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(h|m|s)", text)
    if m:
        seconds = float(m.group(1)) * {"h": 3600, "m": 60, "s": 1}[m.group(2)]
        return now - timedelta(seconds=seconds)
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidError(
            f"invalid filter 'until={text}': use 24h, a Unix time or an RFC 3339 time", field="filters"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
