"""Docker's ``-p/--publish`` syntax, parsed client-side into the API's port entries.

Accepted forms (as ``docker run -p``)::

    80                      container port, host port chosen by the daemon (HostPort 0)
    80/udp
    8080:80                 host:container
    127.0.0.1:8080:80       ip:host:container
    127.0.0.1::80           ip, host port chosen by the daemon
    [::1]:8080:80           IPv6 host address in brackets
    8000-8010:80-90/tcp     equal-length ranges, one entry per port
    80-90                   container range, host ports chosen by the daemon

This module is stdlib-only and imports ``ipaddress`` lazily: the CLI must start fast.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    PortEntry = dict[str, Any]

PROTOCOLS = ("tcp", "udp", "sctp")


class PublishSpecError(ValueError):
    """A ``-p`` value that cannot be parsed; the message names the spec and what is wrong."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(f'invalid publish spec "{spec}": {reason}')
        self.spec = spec
        self.reason = reason


def parse_publish(spec: str) -> list[PortEntry]:
    """Parse one ``-p`` value into ``[{"HostIp"?, "HostPort", "ContainerPort", "Proto"}, ...]``.

    ``HostIp`` is omitted when no address is given (the daemon publishes on every address).
    """
    rest, slash, proto = spec.rpartition("/")
    if not slash:
        rest, proto = spec, "tcp"
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise PublishSpecError(spec, f'protocol "{proto}" is not one of {", ".join(PROTOCOLS)}')
    host_ip, host_part, container_part = _split_address(spec, rest)
    if host_ip:
        host_ip = _check_ip(spec, host_ip)
    if not container_part:
        raise PublishSpecError(spec, "no container port")
    c_first, c_last = _parse_range(spec, container_part, "container port")
    count = c_last - c_first + 1
    if host_part:
        h_first, h_last = _parse_range(spec, host_part, "host port")
        if h_last - h_first + 1 != count:
            raise PublishSpecError(
                spec,
                f"host port range {host_part} and container port range {container_part} must have the same length",
            )
    else:
        h_first = 0  # 0: the daemon chooses a free host port for each entry
    entries: list[PortEntry] = []
    for offset in range(count):
        entry: PortEntry = {}
        if host_ip:
            entry["HostIp"] = host_ip
        entry["HostPort"] = h_first + offset if h_first else 0
        entry["ContainerPort"] = c_first + offset
        entry["Proto"] = proto
        entries.append(entry)
    return entries


def _split_address(spec: str, rest: str) -> tuple[str, str, str]:
    """Split ``[ip:]host:container`` into (ip, host, container); missing parts are ``""``."""
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise PublishSpecError(spec, 'missing "]" after the IPv6 address')
        host_ip, after = rest[1:close], rest[close + 1 :]
        if not host_ip:
            raise PublishSpecError(spec, "empty host address in brackets")
        if not after.startswith(":"):
            raise PublishSpecError(spec, "expected [ip]:host:container")
        host_part, colon, container_part = after[1:].partition(":")
        if not colon or ":" in container_part:
            raise PublishSpecError(spec, "expected [ip]:host:container")
        return host_ip, host_part, container_part
    parts = rest.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    # Three parts is ip:host:container; more is an unbracketed IPv6 address, as Docker accepts.
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _check_ip(spec: str, text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise PublishSpecError(spec, f'"{text}" is not an IP address') from None


def _parse_range(spec: str, text: str, what: str) -> tuple[int, int]:
    first_text, dash, last_text = text.partition("-")
    first = _parse_port(spec, first_text, what)
    last = _parse_port(spec, last_text, what) if dash else first
    if last < first:
        raise PublishSpecError(spec, f"{what} range {text} ends before it starts")
    return first, last


def _parse_port(spec: str, text: str, what: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise PublishSpecError(spec, f'{what} "{text}" is not a number')
    port = int(text)
    if not 1 <= port <= 65535:
        raise PublishSpecError(spec, f"{what} {port} is outside 1-65535")
    return port
