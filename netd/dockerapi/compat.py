"""Docker Engine API shapes for the network routes (pure): API versions, ``filters``, request translation, views.

netd's own API already takes Docker's ``NetworkCreate`` and ``EndpointConfig`` shapes; what differs is what the
docker CLI and SDK send beside them (``Scope``, ``Ingress``, ``ConfigFrom``, ``Links``, ...), the ``filters``
query, and the error shape (``{"message": ...}``).  Everything here is translation; the service does the work.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from netd.core.errors import InvalidError
from netd.core.model import DesiredState, Network
from netd.views import network_view

API_VERSION = "1.48"  # the Engine API version netd speaks (Docker 28.0); clients negotiate down to it
MIN_API_VERSION = "1.24"
LIST_FILTERS = ("dangling", "driver", "id", "label", "name", "scope", "type")
PRUNE_FILTERS = ("until", "label", "label!")
_VERSION = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")
ZERO_TIME = "0001-01-01T00:00:00Z"


def _vtuple(v: str) -> tuple[int, int]:
    major, minor = v.split(".")
    return int(major), int(minor)


def split_version(path: str) -> tuple[str | None, str]:
    """``/v1.48/networks`` -> ("1.48", "/networks"); an unversioned path -> (None, path)."""
    m = _VERSION.match(path)
    if m is None:
        return None, path
    return f"{m.group(1)}.{m.group(2)}", m.group(3)


def check_version(version: str) -> None:
    """Docker's answers for a client asking for a version outside what the daemon speaks."""
    if _vtuple(version) > _vtuple(API_VERSION):
        raise InvalidError(
            f"client version {version} is too new. Maximum supported API version is {API_VERSION}", field="version"
        )
    if _vtuple(version) < _vtuple(MIN_API_VERSION):
        raise InvalidError(
            f"client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, "
            "please upgrade your client to a newer version",
            field="version",
        )


def parse_filters(raw: str | None, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """``filters`` as ``{"name": ["a"]}`` (current) or ``{"name": {"a": true}}`` (what the docker CLI sends)."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidError(f"invalid filter: {raw[:100]!r} is not JSON", field="filters") from None
    if not isinstance(data, dict):
        raise InvalidError("invalid filter: expected a JSON object of lists", field="filters")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if key not in allowed:
            raise InvalidError(f"invalid filter '{key}' (known: {', '.join(allowed)})", field="filters")
        if isinstance(value, dict):
            out[key] = [k for k, on in value.items() if on]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        else:
            raise InvalidError(f"invalid filter '{key}': expected a list of strings", field="filters")
    return out


def _label_match(labels: dict[str, str], wanted: str) -> bool:
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)


def network_matches(net: Network, endpoints: int, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if not values:
            continue
        if key == "name" and not any(v in net.name for v in values):
            return False
        if key == "id" and not any(net.id.startswith(v) for v in values):
            return False
        if key == "driver" and net.driver not in values:
            return False
        if key == "scope" and "local" not in values:
            return False
        if key == "label" and not all(_label_match(net.labels, v) for v in values):
            return False
        if key == "type":
            for v in values:
                if v not in ("custom", "builtin"):
                    raise InvalidError(f"invalid filter: 'type'='{v}' (use custom or builtin)", field="filters")
            if ("builtin" if net.is_default else "custom") not in values:
                return False
        if key == "dangling":
            for v in values:
                if v not in ("true", "false", "1", "0"):
                    raise InvalidError(f"invalid filter 'dangling={v}' (use true or false)", field="filters")
            dangling = not net.is_default and endpoints == 0
            if dangling != (values[-1] in ("true", "1")):
                return False
    return True


def prune_matches(net: Network, filters: dict[str, list[str]], now: datetime) -> bool:
    if any(not _label_match(net.labels, v) for v in filters.get("label", [])):
        return False
    if any(_label_match(net.labels, v) for v in filters.get("label!", [])):
        return False
    for until in filters.get("until", []):
        if net.created and datetime.fromisoformat(net.created) >= _until(until, now):
            return False
    return True


def _until(text: str, now: datetime) -> datetime:
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
        raise InvalidError(f"invalid filter 'until={text}': use 24h, a Unix time or an RFC 3339 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def create_body(body: Any) -> dict[str, Any]:
    """A Docker ``NetworkCreate`` (as the CLI and SDK send it) -> netd's create body; refuses what netd lacks."""
    if not isinstance(body, dict):
        raise InvalidError("the request body must be a JSON object (NetworkCreate)", field="body")
    b = dict(body)
    for key in ("CheckDuplicate", "Attachable"):  # netd checks duplicates always; every network is attachable
        b.pop(key, None)
    scope = b.pop("Scope", None) or "local"
    if scope != "local":
        raise InvalidError(f"scope {scope!r} is not supported: netd networks are local", field="Scope")
    for key in ("Ingress", "ConfigOnly"):
        if b.pop(key, None):
            raise InvalidError(f"{key} networks are not supported by netd", field=key)
    if b.pop("ConfigFrom", None):
        raise InvalidError("ConfigFrom is not supported by netd", field="ConfigFrom")
    if b.get("EnableIPv6") is None:
        b.pop("EnableIPv6", None)
    enable_v4 = b.pop("EnableIPv4", None)
    if b.get("Options") is None:
        b.pop("Options", None)
    if b.get("Labels") is None:
        b.pop("Labels", None)
    if enable_v4 is False:
        b["Options"] = {**(b.get("Options") or {}), "com.docker.network.enable_ipv4": "false"}
    ipam = b.get("IPAM")
    if isinstance(ipam, dict):
        ipam = {k: v for k, v in ipam.items() if v is not None}
        if ipam.pop("Options", None):
            raise InvalidError("IPAM options are not supported by netd's IPAM", field="IPAM.Options")
        b["IPAM"] = ipam
    elif ipam is None:
        b.pop("IPAM", None)
    return b


def endpoint_config(cfg: Any) -> dict[str, Any]:
    """A Docker ``EndpointSettings`` -> the parts netd takes (IPAMConfig, Aliases, MacAddress, GwPriority)."""
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise InvalidError("EndpointConfig must be an object", field="EndpointConfig")
    if cfg.get("Links"):
        raise InvalidError("legacy links are not supported; use aliases (--alias)", field="Links")
    if cfg.get("DriverOpts"):
        raise InvalidError("driver options of an endpoint are not supported by netd", field="DriverOpts")
    out: dict[str, Any] = {}
    ipam = cfg.get("IPAMConfig")
    if isinstance(ipam, dict):
        out["IPAMConfig"] = {k: ipam[k] for k in ("IPv4Address", "IPv6Address") if ipam.get(k)}
    elif ipam is not None:
        raise InvalidError("EndpointConfig.IPAMConfig must be an object", field="IPAMConfig")
    for key in ("Aliases", "MacAddress"):
        if cfg.get(key):
            out[key] = cfg[key]
    if cfg.get("GwPriority") is not None:  # docker network connect --gw-priority N
        out["GwPriority"] = cfg["GwPriority"]
    return out


def docker_network_view(net: Network, state: DesiredState) -> dict[str, Any]:
    """netd's inspect JSON, with the fields a Docker client decodes filled in."""
    view = network_view(net, state)
    view["Created"] = net.created or ZERO_TIME
    view["EnableIPv4"] = net.pool(4) is not None
    view.setdefault("ConfigFrom", {"Network": ""})
    view.setdefault("ConfigOnly", False)
    view.setdefault("Ingress", False)
    return view
