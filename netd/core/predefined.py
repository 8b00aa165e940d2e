"""Docker's predefined networks ``host`` and ``none``, and the network filters of ``GET /v1/networks`` (pure).

netd's ``bridge`` is a real network (the default bridge); ``host`` (the host's own namespace) and ``none`` (a
namespace with only ``lo``) have nothing to build, so they exist only in what the API shows and refuses, as
``docker network ls`` shows them: ``host`` with driver ``host``, ``none`` with driver ``null``.
"""

from __future__ import annotations

from typing import Any

from netd.core import netfilters
from netd.core.errors import ConflictError
from netd.core.netfilters import Filters

# name -> driver, as Docker shows them; the ids are fixed so they are stable across restarts
PREDEFINED = {"host": "host", "none": "null"}
_IDS = {"host": "0" * 63 + "1", "none": "0" * 63 + "2"}


def predefined_view(name: str) -> dict[str, Any]:
    return {
        "Name": name,
        "Id": _IDS[name],
        "Created": "",
        "Scope": "local",
        "Driver": PREDEFINED[name],
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": []},
        "Internal": False,
        "Attachable": False,
        "Containers": {},
        "Options": {},
        "Labels": {},
        "Bridge": "",
        "Default": False,
    }


def predefined_by_ref(ref: str) -> str | None:
    """``host`` / ``none`` when ``ref`` names one of them (by name or by its id)."""
    if ref in PREDEFINED:
        return ref
    return next((name for name, i in _IDS.items() if i == ref), None)


def refuse_create(name: str) -> None:
    if name in PREDEFINED or name == "bridge":
        raise ConflictError(
            f"network with name {name} already exists (a predefined network, as in Docker); choose another name",
            field="Name",
        )


def refuse_remove(name: str) -> None:
    raise ConflictError(
        f"{name} is a pre-defined network and cannot be removed (as in Docker); nothing to do", field="name"
    )


def refuse_connect(name: str, netns: str | None = None) -> None:
    """Docker's own messages: connecting to ``host`` or ``none`` (or a ``--network none`` netns) is refused."""
    if name == "host":
        fix = (
            f"netns {netns!r} is the host's own namespace (--network host): it has the host's interfaces"
            if netns is not None
            else "to run in the host's namespace, use netd-ctl netns create --network host NAME"
        )
        raise ConflictError(
            "container cannot be disconnected from host network or connected to host network (as in Docker); "
            + fix,
            field="network",
        )
    fix = (
        f"netns {netns!r} was created with --network none: remove it and create it without --network"
        if netns is not None
        else "a namespace without networks needs no connect: netd-ctl netns create --network none NAME"
    )
    raise ConflictError(
        "container cannot be connected to multiple networks with one of the networks in private (none) mode "
        f"(as in Docker); {fix}",
        field="network",
    )


def parse_filters(raw: dict[str, Any]) -> Filters:
    """``GET /v1/networks?filters=``: Docker's filters (``netd.core.netfilters``), checked."""
    return netfilters.parse_filters(raw, netfilters.LIST_KEYS)


def matches(view: dict[str, Any], filters: Filters) -> bool:
    """A network's view (``netd.views.network_view`` or ``predefined_view``) against Docker's filters."""
    subject = netfilters.Subject(
        name=view["Name"],
        id=view["Id"],
        driver=view["Driver"],
        labels=view.get("Labels") or {},
        builtin=view["Name"] in PREDEFINED or bool(view.get("Default")),
        endpoints=len(view.get("Containers") or {}),
        scope=view.get("Scope") or "local",
        created=view.get("Created") or "",
    )
    return netfilters.matches(subject, filters)
