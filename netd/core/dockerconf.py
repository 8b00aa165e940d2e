"""Docker's ``daemon.json`` read as it is, and hints for Docker keys put in the wrong place of netd's TOML.

Pure: maps keys to netd's settings tree; the values are validated by :mod:`netd.config` like any other.
"""

from __future__ import annotations

from typing import Any

# daemon.json key -> where it lives in netd's settings (section, key); section "" is the top level.
DAEMON_JSON_KEYS: dict[str, tuple[str, str]] = {
    "bip": ("default_bridge", "bip"),
    "fixed-cidr": ("default_bridge", "fixed_cidr"),
    "fixed-cidr-v6": ("default_bridge", "fixed_cidr_v6"),
    "mtu": ("default_bridge", "mtu"),
    "default-gateway": ("default_bridge", "default_gateway"),
    "default-gateway-v6": ("default_bridge", "default_gateway_v6"),
    "icc": ("default_bridge", "icc"),
    "ip-masq": ("default_bridge", "ip_masq"),
    "ipv6": ("default_bridge", "ipv6"),
    "dns": ("default_bridge", "dns"),
    "ip-forward": ("", "ip_forward"),
    "default-address-pools": ("", "default_address_pools"),
}

# Keys of netd's own sections a Docker user may write at the top level of the TOML (Docker's flat layout).
_SECTION_OF = {
    "bip": "default_bridge",
    "fixed_cidr": "default_bridge",
    "fixed_cidr_v6": "default_bridge",
    "mtu": "default_bridge",
    "default_gateway": "default_bridge",
    "default_gateway_v6": "default_bridge",
    "icc": "default_bridge",
    "ip_masq": "default_bridge",
    "ipv6": "default_bridge",
    "backend": "firewall",
    "listen": "metrics",
}


def from_daemon_json(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Docker's daemon.json -> netd's settings tree (dashed names), and the Docker keys netd does not use.

    ``dns`` is both the default bridge's resolvers (as Docker writes them into its containers' resolv.conf) and
    the upstreams of netd's per-network resolvers (as Docker's embedded DNS forwards to them).
    ``iptables: false`` turns netd's firewall off; ``bridge: "none"`` turns the default bridge off.
    """
    out: dict[str, Any] = {}
    ignored: list[str] = []
    bridge: dict[str, Any] = {}
    for key, value in data.items():
        if key in DAEMON_JSON_KEYS:
            section, name = DAEMON_JSON_KEYS[key]
            if section:
                bridge[name] = value
            else:
                out[name] = value
            if key == "dns":
                out["dns"] = value
        elif key == "iptables":
            out["firewall"] = {"backend": "auto" if value is True else "none" if value is False else value}
        elif key == "bridge":
            if value == "none":
                bridge["enabled"] = False
            else:
                bridge["name"] = value
        else:
            ignored.append(key)
    if bridge:
        out["default_bridge"] = bridge
    return out, sorted(ignored)


def misplaced(key: str) -> str | None:
    """Where a top-level TOML key a Docker user wrote belongs, as a hint (``None``: no hint)."""
    if key in _SECTION_OF:
        return f"belongs under [{_SECTION_OF[key]}]: write it as [{_SECTION_OF[key]}] {key.replace('_', '-')}"
    if key == "iptables":
        return 'belongs under [firewall]: write [firewall] backend = "iptables" (or "none" for iptables=false)'
    if key == "bridge":
        return 'belongs under [default_bridge]: write [default_bridge] name = "..." (or enabled = false)'
    dashed = key.replace("_", "-")
    if dashed in _DOCKER_ONLY:
        return (
            f"is a Docker daemon.json key netd does not use: remove it (netd --config daemon.json reads a "
            f"daemon.json as it is and ignores {dashed})"
        )
    return None


# Common daemon.json keys that have no meaning for netd (a hint only; a daemon.json ignores any unknown key).
_DOCKER_ONLY = {
    "storage-driver",
    "storage-opts",
    "data-root",
    "log-driver",
    "log-opts",
    "log-level",
    "exec-opts",
    "registry-mirrors",
    "insecure-registries",
    "live-restore",
    "userland-proxy",
    "experimental",
    "features",
    "ip6tables",
    "dns-search",
    "dns-opts",
    "hosts",
    "debug",
    "labels",
    "default-runtime",
    "runtimes",
    "max-concurrent-downloads",
}
