"""Names netd generates and the kernel limits it checks up front (pure)."""

from __future__ import annotations

import re
import secrets

from .errors import InvalidError

IFNAMSIZ = 15
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_OBJNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def new_id() -> str:
    """A 64-hex-digit id, like Docker's network and endpoint ids."""
    return secrets.token_hex(32)


def bridge_name(net_id: str) -> str:
    return "br-" + net_id[:12]


def host_veth_name(ep_id: str) -> str:
    return "veth" + ep_id[:11]


def mac_for(ep_id: str) -> str:
    """A stable, locally administered unicast MAC derived from the endpoint id (the same after a replay)."""
    octets = [0x02] + [int(ep_id[i : i + 2], 16) for i in range(0, 10, 2)]
    return ":".join(f"{o:02x}" for o in octets)


def validate_ifname(name: str, field: str) -> str:
    if not name or len(name.encode()) > IFNAMSIZ:
        raise InvalidError(
            f"{field} {name!r} is {len(name.encode())} bytes; Linux interface names are 1-{IFNAMSIZ} bytes",
            field=field,
        )
    if not _IFNAME.match(name) or name in (".", ".."):
        raise InvalidError(f"{field} {name!r} may only contain letters, digits, '_', '.' and '-'", field=field)
    return name


def validate_name(name: str, what: str, max_len: int = 64) -> str:
    """Network and netns names: what a user types; also used as file names, so no '/'."""
    if not name or len(name) > max_len or not _OBJNAME.match(name):
        raise InvalidError(
            f"{what} name {name!r} is not valid: use 1-{max_len} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    return name
