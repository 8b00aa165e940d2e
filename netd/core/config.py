"""Daemon settings: a TOML file (``netd --config FILE``) overridden by ``NETD_*`` environment variables.

Keys of ``[default_bridge]`` and the address pools use Docker's ``daemon.json`` names (``bip``, ``fixed-cidr``,
``ip-masq``, ``default-address-pools`` ...), so a Docker user can carry their settings over.
"""

from __future__ import annotations

import json
import re
import socket
import tomllib
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from netd.core.dockerconf import from_daemon_json, misplaced
from netd.core.errors import InvalidError
from netd.core.ports import parse_port_range

log = structlog.get_logger()

DEFAULT_CONFIG = Path("/etc/netd/netd.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AddressPool(_Section):
    base: IPv4Network
    size: int = Field(ge=8, le=30)

    @model_validator(mode="after")
    def _size_fits(self) -> AddressPool:
        if self.size < self.base.prefixlen:
            raise ValueError(f"size /{self.size} is larger than the base {self.base}")
        return self


# Docker's default pools: 172.17.0.0/16 ... 172.31.0.0/16, then 192.168.0.0/16 in /20s.  172.16.0.0/16 is never
# taken automatically (the Docker guide's macvlan example uses 172.16.86.0/24), and the default bridge gets
# 172.17.0.0/16, as docker0 does, unless the host already routes it (a real docker0, a VPN).
DEFAULT_POOLS = [
    AddressPool(base=IPv4Network("172.17.0.0/16"), size=16),
    AddressPool(base=IPv4Network("172.18.0.0/15"), size=16),
    AddressPool(base=IPv4Network("172.20.0.0/14"), size=16),
    AddressPool(base=IPv4Network("172.24.0.0/13"), size=16),
    AddressPool(base=IPv4Network("192.168.0.0/16"), size=20),
]


class DefaultBridge(_Section):
    """The docker0-style default network (``netd0``)."""

    enabled: bool = True
    name: str = Field(default="netd0", max_length=15, pattern=r"^[A-Za-z0-9_.-]+$")
    network_name: str = Field(default="bridge")
    # bip: the bridge address with its prefix, e.g. "172.17.0.1/16". Unset: the first free pool subnet.
    bip: IPv4Interface | None = None
    fixed_cidr: IPv4Network | None = Field(default=None)
    mtu: int | None = Field(default=None, ge=68, le=65535)
    default_gateway: IPv4Address | None = Field(default=None)
    # resolvers written into default-bridge namespaces' resolv.conf (Docker's --dns for docker0 containers)
    dns: list[IPv4Address | IPv6Address] = Field(default_factory=list)
    icc: bool = True
    ip_masq: bool = Field(default=True)
    ipv6: bool = False
    fixed_cidr_v6: IPv6Network | None = None  # the default bridge's IPv6 subnet; unset: a /64 of the host's ULA
    default_gateway_v6: IPv6Address | None = None

    @field_validator("fixed_cidr", "fixed_cidr_v6", mode="before")
    @classmethod
    def _mask_host_bits(cls, v: Any) -> Any:
        # Docker's own example is fixed-cidr "192.168.1.5/25": the host bits are masked, as dockerd does.
        if isinstance(v, str) and "/" in v:
            try:
                return str(ip_network(v.strip(), strict=False))
            except ValueError:
                return v  # the field's own validation names what is wrong
        return v

    @model_validator(mode="after")
    def _gateways_inside(self) -> DefaultBridge:
        # dockerd refuses these too ("default gateway ip must be part of the network"); refusing at load beats
        # "Network is unreachable" at every connect.
        bip, gw, gw6 = self.bip, self.default_gateway, self.default_gateway_v6
        if bip is not None and gw is not None and gw not in bip.network:
            raise ValueError(
                f"default-gateway {gw} is outside bip's subnet {bip.network}: "
                "choose an address inside it (or change bip)"
            )
        if self.fixed_cidr_v6 is not None and gw6 is not None and gw6 not in self.fixed_cidr_v6:
            raise ValueError(
                f"default-gateway-v6 {self.default_gateway_v6} is outside fixed-cidr-v6 {self.fixed_cidr_v6}: "
                "choose an address inside it"
            )
        return self

    @model_validator(mode="after")
    def _fixed_cidr_inside(self) -> DefaultBridge:
        if (
            self.bip is not None
            and self.fixed_cidr is not None
            and not self.fixed_cidr.subnet_of(self.bip.network)
        ):
            raise ValueError(f"fixed-cidr {self.fixed_cidr} is not inside bip's subnet {self.bip.network}")
        return self


class Firewall(_Section):
    backend: Literal["auto", "nftables", "iptables", "none"] = "auto"


class Metrics(_Section):
    """Prometheus ``/metrics``: ``listen = "HOST:PORT"`` (``[::1]:9465`` for IPv6), ``"unix:/PATH"`` (a Unix socket
    with the API socket's group, mode 0660), or ``""`` (off).  ``token_file``: scrapes must send
    ``Authorization: Bearer <the file's content>``."""

    listen: str = "127.0.0.1:9465"
    token_file: Path | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        if not self.listen or self.unix_path is not None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def unix_path(self) -> Path | None:
        return Path(self.listen[len("unix:") :]) if self.listen.startswith("unix:") else None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if v.startswith("unix:"):
            if not v[len("unix:") :].startswith("/"):
                raise ValueError(
                    f'"{v}": a Unix socket needs an absolute path, e.g. "unix:/run/netd/metrics.sock"'
                )
            return v
        host, colon, port = v.rpartition(":")
        if v and (not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535):
            raise ValueError(
                f'"{v}" is not HOST:PORT or unix:/PATH (e.g. "127.0.0.1:9465", "[::1]:9465", '
                '"unix:/run/netd/metrics.sock"; "" turns it off)'
            )
        return v


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(d|h|m|s)")
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``"12h"``, ``"1h30m"``, ``"90s"``, ``"2d"`` or a plain number of seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().replace(" ", "")
        if not text or _DURATION.sub("", text):
            raise ValueError(f'"{value}" is not a duration: use e.g. "12h", "1h30m", "90s" or "2d"')
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text))
    if seconds <= 0:
        raise ValueError(f'"{value}": a duration must be longer than 0 s')
    return seconds


_ENDPOINT = re.compile(r"^(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})/?$")


class Cluster(_Section):
    """Multi-host mode (overlay networks): the etcd cluster every node shares.  Without this section netd is
    single-host and does not even import its cluster code."""

    etcd_endpoints: list[str] = Field(min_length=1)
    etcd_cacert: Path | None = None  # the CA that signed etcd's server certificate (TLS)
    etcd_cert: Path | None = None  # this node's client certificate (etcd --client-cert-auth)
    etcd_key: Path | None = None  # ... and its private key
    node_name: str = Field(
        default_factory=socket.gethostname, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )
    # the underlay address other nodes send VXLAN to; unset: the address of the default route's interface
    advertise_address: IPv4Address | IPv6Address | None = None
    vxlan_port: int = Field(default=4789, ge=1, le=65535)
    lease_ttl: int = Field(default=10, ge=2, le=3600, description="seconds a node stays alive without etcd")
    request_timeout: float = Field(default=5.0, gt=0, le=60, description="seconds before an etcd call gives up")
    encryption_key_rotation: float = 12 * 3600.0  # seconds; written as "12h", "30m", "1h30m", "2d"
    key_prefix: str = Field(default="/netd/v1", pattern=r"^/[A-Za-z0-9_./-]*[A-Za-z0-9_-]$")
    # automatic overlay subnets: Docker's default-address-pool for swarm scope, 10.0.0.0/8 split in /24
    overlay_address_pools: list[AddressPool] = Field(
        default_factory=lambda: [AddressPool(base=IPv4Network("10.0.0.0/8"), size=24)], min_length=1
    )

    @field_validator("etcd_endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        for ep in v:
            m = _ENDPOINT.match(ep)
            if m is None or not 1 <= int(m.group(3)) <= 65535:
                raise ValueError(f'"{ep}" is not an etcd client URL (e.g. "http://192.0.2.100:2379")')
        return v

    @field_validator("encryption_key_rotation", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        if not isinstance(v, str | int | float):
            raise ValueError('use a duration such as "12h"')
        return parse_duration(v)

    @model_validator(mode="after")
    def _tls_files(self) -> Cluster:
        if (self.etcd_cert is None) != (self.etcd_key is None):
            raise ValueError("etcd_cert and etcd_key go together: set both (client certificate auth) or neither")
        for name in ("etcd_cacert", "etcd_cert", "etcd_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path}: no such file (check the path and netd's permission to read it)")
        return self

    @property
    def tls(self) -> bool:
        return (
            self.etcd_cacert is not None
            or self.etcd_cert is not None
            or any(ep.startswith("https://") for ep in self.etcd_endpoints)
        )


class DockerApi(_Section):
    """Docker's Engine API network routes for the docker CLI and SDK: ``listen = "unix:/run/netd/docker.sock"``;
    ``""`` (the default) turns it off.  The socket gets the API socket's mode and group."""

    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _unix(cls, v: str) -> str:
        if v and (not v.startswith("unix:/") or "\0" in v):
            example = '"unix:/run/netd/docker.sock"; "" turns it off'
            raise ValueError(f'"{v}" is not unix:/ABSOLUTE/PATH (e.g. {example})')
        return v

    @property
    def path(self) -> Path | None:
        return Path(self.listen.removeprefix("unix:")) if self.listen else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NETD_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    state_dir: Path = Path("/var/lib/netd")
    run_dir: Path = Path("/run/netd")
    netns_dir: Path = Path("/run/netns")
    # where `ip netns exec` finds per-netns files: netd writes <etc_netns_dir>/<netns>/resolv.conf
    etc_netns_dir: Path = Path("/etc/netns")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    reconcile_interval: float = Field(default=120.0, gt=0, description="seconds between full drift checks")
    firewall_check_interval: float = Field(default=1.0, gt=0, description="seconds between firewall checks")
    # under systemd's WatchdogSec: a lock held or an API request running longer than this stops WATCHDOG=1
    watchdog_stuck_after: float = Field(default=120.0, gt=0, description="seconds before netd counts as stuck")
    socket_mode: int = 0o660
    socket_group: str | None = "netd"
    ip_forward: bool = True
    ip6_forward: bool = True  # net.ipv6.conf.all.forwarding=1 once a network has IPv6
    machine_id_file: Path = Path("/etc/machine-id")  # seeds the host's ULA /48 for automatic IPv6 subnets
    default_address_pools: list[AddressPool] = Field(default_factory=lambda: list(DEFAULT_POOLS))
    default_bridge: DefaultBridge = Field(default_factory=DefaultBridge)
    firewall: Firewall = Field(default_factory=Firewall)
    # upstream resolvers for names the per-network resolvers do not know; empty: the host's resolv.conf
    dns: list[IPv4Address | IPv6Address] = Field(default_factory=list)
    metrics: Metrics = Field(default_factory=Metrics)
    cluster: Cluster | None = None  # [cluster]: multi-host mode (overlay networks through etcd)
    docker_api: DockerApi = Field(default_factory=DockerApi)
    # host ports `-p 80` (no host port) is given, lowest free first; Docker's default range
    published_port_range: str = "49153-60999"
    # Bind-mount named netns from this mount namespace (systemd's ProtectSystem= gives netd a private one whose
    # mounts never reach the host); "" or an unreadable path: netd's own mount namespace.
    host_mount_namespace: str = "/proc/1/ns/mnt"

    @field_validator("default_address_pools")
    @classmethod
    def _pools_not_empty(cls, v: list[AddressPool]) -> list[AddressPool]:
        if not v:
            raise ValueError("at least one pool is needed")
        return v

    @field_validator("published_port_range")
    @classmethod
    def _port_range(cls, v: str) -> str:
        parse_port_range(v)
        return v

    @property
    def port_range(self) -> tuple[int, int]:
        return parse_port_range(self.published_port_range)

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "netd.sock"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (the TOML file, passed by load_settings) < env: NETD_* overrides the file.
        return (env_settings, init_settings)


def _describe(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if e["type"] == "extra_forbidden" and len(e["loc"]) == 1 and (hint := misplaced(str(e["loc"][0]))):
            msg = f"unknown key at the top level; it {hint}"
        parts.append(f"{loc}: {msg}")
    return f"{source}: " + "; ".join(parts) + " (fix the key or remove it, then start netd again)"


def _normalise_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Docker's dashed names (``ip-masq``) and Python's (``ip_masq``) mean the same key."""
    return {k.replace("-", "_"): _normalise_keys(v) if isinstance(v, dict) else v for k, v in data.items()}


def _read_daemon_json(cfg: Path) -> dict[str, Any]:
    """Docker's daemon.json as it is: its keys mapped to netd's, the ones netd does not use named once."""
    try:
        raw = json.loads(cfg.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
        raise InvalidError(f"config {cfg}: not valid JSON: {e}", field="config") from e
    if not isinstance(raw, dict):
        raise InvalidError(f"config {cfg}: a daemon.json is a JSON object ({{...}})", field="config")
    data, ignored = from_daemon_json(raw)
    if ignored:
        log.info("daemon_json_keys_ignored", config=str(cfg), keys=ignored, reason="not used by netd")
    return data


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (a missing default file means embedded defaults) and the environment.

    A file named explicitly must exist.  Any error names the key and the file.
    """
    data: dict[str, Any] = {}
    explicit = path is not None
    cfg = path if path is not None else DEFAULT_CONFIG
    if cfg.exists() and cfg.suffix == ".json":
        data = _read_daemon_json(cfg)
    elif cfg.exists():
        try:
            data = tomllib.loads(cfg.read_text())
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as e:
            raise InvalidError(f"config {cfg}: not valid TOML: {e}", field="config") from e
    elif explicit:
        raise InvalidError(f"config {cfg}: no such file (create it or omit --config)", field="config")
    data = _normalise_keys(data)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as e:
        raise InvalidError(_describe(e, f"config {cfg}"), field="config") from e
