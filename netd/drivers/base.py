"""What every non-bridge network driver provides: typed options and the endpoint's link spec (pure).

A driver module (``macvlan``, ``ipvlan``) parses its Docker options into ``LinkOptions`` and turns an endpoint
into a ``ChildSpec``; the parent link they hang off is shared code (``netd.drivers.parent``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from netd.errors import InvalidError
from netd.linkspec import ChildSpec
from netd.model import Endpoint, Network

OPT_PARENT = "parent"
OPT_HOST_ACCESS = "host_access"


@dataclass(frozen=True)
class LinkOptions:
    """A macvlan/ipvlan network's options, validated."""

    parent: str | None  # None: a dummy parent owned by netd
    mode: str
    flag: str | None = None
    host_access: bool = False


class LinkDriver(Protocol):
    """One network kind whose endpoints are children of a parent link."""

    name: str
    options: tuple[str, ...]  # the -o keys it accepts (com.docker.network.driver.mtu is common to all)

    def parse_options(self, options: Mapping[str, str]) -> LinkOptions: ...

    def build_child_spec(self, ep: Endpoint, net: Network, ns_path: str) -> ChildSpec: ...

    def endpoint_mac(self, net: Network, ep_id: str) -> str: ...


def choice(options: Mapping[str, str], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = options.get(key, default).strip().lower() or default
    if value not in allowed:
        raise InvalidError(
            f"option {key}={options[key]!r} is not valid; use one of: {', '.join(allowed)}", field=key
        )
    return value


def flag_option(options: Mapping[str, str], key: str) -> bool:
    if key not in options:
        return False
    low = options[key].strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise InvalidError(f"option {key}={options[key]!r}: expected true or false", field=key)
