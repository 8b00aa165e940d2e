"""Output for netd-ctl: aligned tables like ``docker network ls``, ``key: value`` lines and indented JSON."""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

SHORT_ID = 12
_PADDING = 3  # docker's tabwriter padding between columns


def to_json(value: Any, indent: int = 4) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by at least three spaces; the last column is not padded."""
    all_rows = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(headers))]
    lines = []
    for row in all_rows:
        cells = [cell.ljust(widths[i] + _PADDING) for i, cell in enumerate(row[:-1])]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines)


def scalar(value: Any) -> str:
    """A JSON value as a table cell or a ``key: value`` value (Go-style booleans, like docker)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(scalar(item) for item in value) if value else "-"
    if isinstance(value, dict):
        return to_json(value, indent=0).replace("\n", " ") if value else "-"
    return str(value)


def flatten(obj: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested objects become dotted keys: ``{"reconcile": {"last": x}}`` -> ``[("reconcile.last", "x")]``."""
    items: list[tuple[str, str]] = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items.extend(flatten(value, f"{name}."))
        else:
            items.append((name, scalar(value)))
    return items


def key_values(obj: dict[str, Any]) -> str:
    items = flatten(obj)
    if not items:
        return ""
    width = max(len(key) for key, _ in items) + 1
    return "\n".join(f"{key + ':':<{width}} {value}".rstrip() for key, value in items)


def short_id(value: Any, no_trunc: bool = False) -> str:
    text = str(value or "")
    return text if no_trunc else text[:SHORT_ID]


def network_rows(networks: list[dict[str, Any]], no_trunc: bool = False) -> list[list[str]]:
    rows = []
    for net in sorted(networks, key=lambda n: str(n.get("Name", ""))):
        configs = (net.get("IPAM") or {}).get("Config") or []
        subnets = ",".join(str(c["Subnet"]) for c in configs if isinstance(c, dict) and c.get("Subnet"))
        rows.append(
            [
                short_id(net.get("Id"), no_trunc),
                str(net.get("Name", "")),
                str(net.get("Driver", "")),
                str(net.get("Scope", "local")),
                subnets or "-",
                scalar(bool(net.get("Internal", False))),
            ]
        )
    return rows


def network_table(networks: list[dict[str, Any]], no_trunc: bool = False) -> str:
    return table(["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET", "INTERNAL"], network_rows(networks, no_trunc))


def node_table(nodes: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(n.get("Name", "")),
            str(n.get("Address", "")),
            str(n.get("State", "")),
            str(n.get("Endpoints", 0)),
            str(n.get("LastSeen", "")) or "-",
        ]
        for n in nodes
    ]
    return table(["NAME", "ADDRESS", "STATE", "ENDPOINTS", "LAST SEEN"], rows)


def network_ids(networks: list[dict[str, Any]], no_trunc: bool = False) -> str:
    return "\n".join(row[0] for row in network_rows(networks, no_trunc))


def netns_table(namespaces: list[dict[str, Any]]) -> str:
    rows = [
        [str(ns.get("Name", "")), str(ns.get("Path", "")), str(len(ns.get("Endpoints") or []))]
        for ns in sorted(namespaces, key=lambda n: str(n.get("Name", "")))
    ]
    return table(["NAME", "PATH", "ENDPOINTS"], rows)


def host_address(host_ip: Any, host_port: Any) -> str:
    ip = str(host_ip or "0.0.0.0")
    if ":" in ip:
        ip = f"[{ip}]"
    return f"{ip}:{host_port}"


def port_lines(netns: dict[str, Any], container_port: int | None = None, proto: str | None = None) -> list[str]:
    """``docker port`` lines for every published port of a namespace's endpoints: ``80/tcp -> 0.0.0.0:8080``."""
    ports: list[tuple[int, str, str]] = []
    for endpoint in netns.get("Endpoints") or []:
        if not isinstance(endpoint, dict):
            continue
        for port in endpoint.get("Ports") or []:
            cport = int(port.get("ContainerPort", 0))
            cproto = str(port.get("Proto") or "tcp")
            if container_port is not None and cport != container_port:
                continue
            if proto is not None and cproto != proto:
                continue
            ports.append((cport, cproto, host_address(port.get("HostIp"), port.get("HostPort"))))
    ports.sort()
    if container_port is not None:
        return [address for _, _, address in ports]  # docker port CONTAINER 80 prints only the addresses
    return [f"{cport}/{cproto} -> {address}" for cport, cproto, address in ports]
