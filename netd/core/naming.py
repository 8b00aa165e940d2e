"""Names netd generates and the kernel limits it checks up front (pure)."""

from __future__ import annotations

import re
import secrets
from ipaddress import IPv4Address

from netd.core.errors import InvalidError
from netd.core.strict import is_dns_name

IFNAMSIZ = 15
# names the kernel refuses or keeps for itself: /proc/sys/net/*/conf/{all,default}, bonding's sysfs file
RESERVED_IFNAMES = ("all", "default", "bonding_masters", ".", "..")
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


def endpoint_mac(ep_id: str, ipv4: IPv4Address | None) -> str:
    """An endpoint's MAC as Docker chooses it: 02:42 and the four bytes of its IPv4 address, so an address that
    is reused (a namespace removed and another connected with the same ``--ip``, or a disconnect and connect)
    keeps its MAC and the neighbour entries that peers and the host cached stay right.  Without IPv4 (an
    IPv6-only endpoint): stable from the endpoint id, as before."""
    if ipv4 is None:
        return mac_for(ep_id)
    return "02:42:" + ":".join(f"{o:02x}" for o in ipv4.packed)


def validate_ifname(name: str, field: str) -> str:
    if not name or len(name.encode()) > IFNAMSIZ:
        raise InvalidError(
            f"{field} {name!r} is {len(name.encode())} bytes; Linux interface names are 1-{IFNAMSIZ} bytes",
            field=field,
        )
    if not _IFNAME.fullmatch(name):
        raise InvalidError(f"{field} {name!r} may only contain letters, digits, '_', '.' and '-'", field=field)
    if name in RESERVED_IFNAMES:
        raise InvalidError(
            f"{field} {name!r} is a name the kernel reserves ({', '.join(RESERVED_IFNAMES)}); choose another",
            field=field,
        )
    return name


def validate_name(name: str, what: str, max_len: int = 64) -> str:
    """Network and netns names: what a user types; also used as file names, so no '/'."""
    if not name or len(name) > max_len or not _OBJNAME.fullmatch(name):
        raise InvalidError(
            f"{what} name {name!r} is not valid: use 1-{max_len} letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    return name


def validate_netns_name(name: str) -> str:
    """A new netns name: also the endpoint's DNS name on every network it joins, so an RFC 1123 host name
    (letters, digits, '-', dots between labels of at most 63), and a file name (at most 64, no '/')."""
    validate_name(name, "netns")
    if not is_dns_name(name, max_len=64) or name.endswith("."):
        raise InvalidError(
            f"netns name {name!r} is not valid: it is also a DNS name, so use letters, digits and '-' "
            "(not first or last), with dots between labels of at most 63, 64 in all",
            field="name",
        )
    return name
