"""Strict checks of untrusted input (pure): JSON bodies, numbers written as text, DNS names.

Python is generous where a network API must not be: ``int(" 1_500")`` and ``int()`` of full-width digits are 1500,
``json.loads`` turns ``NaN``/``1e999`` into floats that become the names ``nan``/``inf``, a 3000-deep array
raises ``RecursionError`` and a 5000-digit integer ``ValueError`` (both were answered with 500).  Every
check here raises :class:`InvalidError` naming the field, so the API answers 400 and nothing changes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from netd.core.errors import InvalidError

MAX_DEPTH = 16  # the deepest Docker-shaped body is 5 levels (IPAM.Config[i].AuxiliaryAddresses.key)
MAX_INT_DIGITS = 20  # ports, MTUs and counts: no field needs more
_ASCII_INT = re.compile(rf"[0-9]{{1,{MAX_INT_DIGITS}}}")
_TOO_DEEP = f"request body is nested too deeply; Docker-shaped bodies need at most {MAX_DEPTH} levels"
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _no_constant(name: str) -> Any:
    raise InvalidError(
        f"request body is not valid JSON: {name} is not a number; send a finite number or a string",
        field="body",
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidError(f"request body: number {text[:40]} is out of range", field="body")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidError(
            f"request body: an integer of {len(text)} digits is out of range (at most {MAX_INT_DIGITS})",
            field="body",
        )
    return int(text)


def parse_json(raw: bytes) -> Any:
    """Parse a request body: finite numbers only, at most ``MAX_DEPTH`` levels, strings without lone surrogates
    (which ``\\ud800`` escapes produce and which cannot be written to the state file or the logs)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidError(f"request body is not valid JSON: it is not UTF-8 ({e.reason})", field="body") from e
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except RecursionError:
        raise InvalidError(_TOO_DEEP, field="body") from None
    except json.JSONDecodeError as e:
        raise InvalidError(f"request body is not valid JSON: {e}", field="body") from e
    except ValueError as e:  # a limit of the parser itself (int digits) that our hooks did not catch first
        raise InvalidError(f"request body is not valid JSON: {e}", field="body") from e
    check_tree(value)
    return value


def check_tree(value: Any) -> None:
    """Depth and string checks of a parsed body, without recursion (a deep body cannot exhaust the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidError(_TOO_DEEP, field="body")
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, sub in item.items():
                _check_text(key)
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, depth + 1) for sub in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidError(
            "request body has a string with an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); "
            "send valid Unicode text",
            field="body",
        ) from None


def ascii_int(text: str, field: str, low: int, high: int, what: str, label: str | None = None) -> int:
    """``text`` as an integer written in ASCII digits only (no sign, spaces, ``_`` or other scripts' digits)."""
    if not _ASCII_INT.fullmatch(text) or not low <= int(text) <= high:
        raise InvalidError(
            f"{label or field} {text!r}: {what} must be a number {low}-{high} in digits 0-9", field=field
        )
    return int(text)


def is_dns_name(name: str, max_len: int = 253) -> bool:
    """RFC 1123 host name: labels of ASCII letters, digits and '-' (not first or last), 1-63 bytes each,
    separated by single dots, at most ``max_len`` in all; one trailing dot is allowed."""
    bare = name[:-1] if name.endswith(".") else name
    if not 0 < len(bare) <= max_len:
        return False
    return all(_DNS_LABEL.fullmatch(label) for label in bare.split("."))
