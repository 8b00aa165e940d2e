"""Docker Engine API shapes for the network routes (pure): API versions, ``filters``, request translation, views.

netd's own API already takes Docker's ``NetworkCreate`` and ``EndpointConfig`` shapes; what differs is what the
docker CLI and SDK send beside them (``Scope``, ``Ingress``, ``ConfigFrom``, ``Links``, ...), the ``filters``
query, and the error shape (``{"message": ...}``).  Everything here is translation; the service does the work.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from netd.core import netfilters
from netd.core.errors import InvalidError
from netd.core.model import DesiredState, Network
from netd.core.netfilters import Filters
from netd.views import network_view

API_VERSION = "1.48"  # the Engine API version netd speaks (Docker 28.0); clients negotiate down to it
MIN_API_VERSION = "1.24"
LIST_FILTERS = netfilters.LIST_KEYS
PRUNE_FILTERS = netfilters.PRUNE_KEYS
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


def parse_filters(raw: str | None, allowed: tuple[str, ...]) -> Filters:
    """``filters`` as ``{"name": ["a"]}`` (current) or ``{"name": {"a": true}}`` (what the docker CLI sends)."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidError(f"invalid filter: {raw[:100]!r} is not JSON", field="filters") from None
    return netfilters.parse_filters(data, allowed)


def subject(net: Network, endpoints: int) -> netfilters.Subject:
    return netfilters.Subject(
        name=net.name,
        id=net.id,
        driver=net.driver,
        labels=net.labels,
        builtin=net.is_default,
        endpoints=endpoints,
        created=net.created or "",
    )


def network_matches(net: Network, endpoints: int, filters: Filters) -> bool:
    return netfilters.matches(subject(net, endpoints), filters)


def prune_matches(net: Network, filters: Filters, now: datetime) -> bool:
    return netfilters.matches(subject(net, 0), filters, now)


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
