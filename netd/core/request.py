"""Parsing of API request bodies (pure).

Bodies use Docker's Engine API shapes (``NetworkCreate``, ``NetworkConnect``), so a Docker user's JSON works.
Every error names the field and says what is expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from typing import Any

from netd.core.errors import InvalidError
from netd.core.gateway import GW_PRIORITY_MAX, GW_PRIORITY_MIN
from netd.core.ipam import parse_address
from netd.core.model import IPAddress, PortMapping
from netd.core.naming import validate_ifname, validate_name, validate_netns_name
from netd.core.ports import publish_all
from netd.core.strict import ascii_int, is_dns_name

OPT_MTU = "com.docker.network.driver.mtu"
OPT_ENABLE_V4 = "com.docker.network.enable_ipv4"
NETWORK_CREATE_FIELDS = (
    "Name",
    "Driver",
    "Internal",
    "EnableIPv6",
    "IPAM",
    "Options",
    "Labels",
    "CheckDuplicate",
    "Attachable",
    "Ingress",
)


@dataclass(frozen=True)
class PoolRequest:
    subnet: str | None
    gateway: str | None
    ip_range: str | None
    aux_addresses: dict[str, str]


@dataclass(frozen=True)
class NetworkCreate:
    name: str
    driver: str
    internal: bool
    enable_ipv6: bool
    pools: list[PoolRequest]
    options: dict[str, str]  # the driver's -o options (parsed by the driver) and the common ones
    mtu: int | None = None
    enable_ipv4: bool = True
    attachable: bool = False  # overlay: plain namespaces may connect (Docker's --attachable)
    ingress: bool = False  # overlay: the routing mesh's network (Docker's --ingress), one per cluster
    labels: dict[str, str] = field(default_factory=dict)  # Docker's network labels


@dataclass(frozen=True)
class Target:
    netns: str | None = None
    netns_path: str | None = None

    def key(self) -> str:
        return f"netns:{self.netns}" if self.netns is not None else f"path:{self.netns_path}"

    def describe(self) -> str:
        return f"netns {self.netns!r}" if self.netns is not None else f"namespace {self.netns_path}"


@dataclass(frozen=True)
class Connect:
    target: Target
    ipv4: IPAddress | None
    ipv6: IPAddress | None
    aliases: list[str] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)
    mac: str | None = None  # EndpointConfig.MacAddress
    ifname: str | None = None  # Interface: the name inside the namespace (CNI_IFNAME); default eth0, eth1, ...
    container_id: str | None = None  # ContainerID: the runtime's container (CNI_CONTAINERID)
    links: list[str] = field(default_factory=list)  # "NAME:ALIAS" (--link, default bridge only)
    gw_priority: int = 0
    service: str | None = None  # overlay: join as a task of this service (``--service NAME``)


def _obj(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidError(f"{what}: the request body must be a JSON object", field="body")
    return body


def _str(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise InvalidError(f"{key} is required", field=key)
        return None
    if not isinstance(value, str):
        raise InvalidError(f"{key} must be a string, not {type(value).__name__}", field=key)
    return value


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise InvalidError(f"{key} must be true or false", field=key)
    return value


def _opt_obj(body: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    """An optional object field: absent or null is empty; anything but an object (``[]``, ``0``) is refused."""
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidError(f"{what} must be an object, not {_json_type(value)}", field=what)
    return value


def _opt_list(body: dict[str, Any], key: str, what: str, field: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidError(f"{what} must be a list, not {_json_type(value)}", field=field)
    return value


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}
    return names.get(type(value), "an object" if isinstance(value, dict) else type(value).__name__)


def _known(body: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in body:
        if key not in known:
            prefix = f"{where}: " if where else ""
            raise InvalidError(f"{prefix}unknown field {key!r} (known: {', '.join(sorted(known))})", field=key)


def _str_map(value: Any, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidError(f"{key} must be an object of string values", field=key)
    return dict(value)


def parse_bool_option(key: str, value: str) -> bool:
    """A Docker ``-o key=true`` option (true/false, 1/0, yes/no, on/off)."""
    low = value.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise InvalidError(f"option {key}={value!r}: expected true or false", field=key)


def parse_network_create(body: Any) -> NetworkCreate:
    """The kind-independent part of a create body; the driver parses ``options`` (``netd.drivers``)."""
    b = _obj(body, "network create")
    _known(b, NETWORK_CREATE_FIELDS, "")
    name = validate_name(_str(b, "Name", required=True) or "", "network")
    driver = _str(b, "Driver") or "bridge"
    if _bool(b, "Ingress") and driver != "overlay":
        raise InvalidError(
            f"--ingress: the routing mesh's network is an overlay network, not {driver}; add -d overlay",
            field="Ingress",
        )
    for flag in ("CheckDuplicate", "Attachable"):  # Docker's; accepted (netd always checks, always attaches)
        if b.get(flag) is not None:
            _bool(b, flag)
    _str_map(b.get("Labels"), "Labels")
    ipam = _opt_obj(b, "IPAM", "IPAM")
    _known(ipam, ("Driver", "Config", "Options"), "IPAM")
    if (_str(ipam, "Driver") or "default") != "default":
        raise InvalidError(
            f"IPAM driver {ipam.get('Driver')!r} is not supported; use default", field="IPAM.Driver"
        )
    _str_map(ipam.get("Options"), "IPAM.Options")
    configs = _opt_list(ipam, "Config", "IPAM.Config", "IPAM.Config")
    pools = []
    for i, c in enumerate(configs):
        c = _obj(c, f"IPAM.Config[{i}]")
        _known(c, ("Subnet", "Gateway", "IPRange", "AuxiliaryAddresses"), f"IPAM.Config[{i}]")
        subnet = _str(c, "Subnet")
        pool = PoolRequest(
            subnet=subnet,
            gateway=_str(c, "Gateway"),
            ip_range=_str(c, "IPRange"),
            aux_addresses=_str_map(c.get("AuxiliaryAddresses"), f"IPAM.Config[{i}].AuxiliaryAddresses"),
        )
        if subnet is None and (pool.gateway or pool.ip_range or pool.aux_addresses):
            raise InvalidError("gateway, ip-range and aux-address need --subnet", field="subnet")
        pools.append(pool)
    options = _str_map(b.get("Options"), "Options")
    return NetworkCreate(
        name=name,
        driver=driver,
        internal=_bool(b, "Internal"),
        enable_ipv6=_bool(b, "EnableIPv6"),
        pools=pools,
        options=options,
        attachable=_bool(b, "Attachable"),
        ingress=_bool(b, "Ingress"),
        labels=_str_map(b.get("Labels"), "Labels"),
    )


def parse_common_options(req: NetworkCreate) -> NetworkCreate:
    """The options every kind takes (once the driver has accepted the keys): MTU, enable_ipv4."""
    options = req.options
    mtu: int | None = None
    if OPT_MTU in options:
        mtu = ascii_int(options[OPT_MTU], OPT_MTU, 68, 65535, "an MTU", label=f"option {OPT_MTU}")
    enable_ipv4 = parse_bool_option(OPT_ENABLE_V4, options[OPT_ENABLE_V4]) if OPT_ENABLE_V4 in options else True
    if not enable_ipv4 and not req.enable_ipv6:
        raise InvalidError(
            f"{OPT_ENABLE_V4}=false needs --ipv6: a network needs an address family", field=OPT_ENABLE_V4
        )
    return replace(req, mtu=mtu, enable_ipv4=enable_ipv4)


def parse_netns_create(body: Any) -> str:
    """``POST /v1/netns``: ``{"Name": "web"}``; the name is a string that is a DNS name (see naming)."""
    b = _obj(body, "netns create")
    _known(b, ("Name", "Network"), "netns create")
    name = _str(b, "Name", required=True)
    assert name is not None
    return validate_netns_name(name)


def parse_netns_network(body: Any) -> str | None:
    """``POST /v1/netns`` ``Network``: Docker's ``--network none`` (a namespace that stays without networks) or
    ``host`` (a name for the host's own namespace)."""
    mode = _str(_obj(body, "netns create"), "Network")
    if mode in (None, "", "bridge", "default"):
        return None
    if mode in ("none", "host"):
        return mode
    raise InvalidError(
        f"Network {mode!r}: netns create takes none or host (or nothing); connect it to a network with "
        "netd-ctl network connect NETWORK NAME",
        field="Network",
    )


def parse_target(body: dict[str, Any]) -> Target:
    netns = _str(body, "Netns")
    path = _str(body, "NetnsPath")
    if (netns is None) == (path is None):
        raise InvalidError(
            "give exactly one of Netns (a netd netns name) or NetnsPath (a namespace file)", field="Netns"
        )
    if netns is not None:
        return Target(netns=validate_name(netns, "netns"))
    assert path is not None
    if not path.startswith("/") or "\0" in path:
        raise InvalidError(
            f"NetnsPath {path!r} must be an absolute path such as /proc/PID/ns/net", field="NetnsPath"
        )
    return Target(netns_path=path)


def parse_disconnect(body: Any) -> Target:
    b = _obj(body, "network disconnect")
    _known(b, ("Netns", "NetnsPath"), "network disconnect")
    return parse_target(b)


def parse_container_disconnect(body: dict[str, Any]) -> tuple[str, str | None]:
    """A runtime's disconnect (CNI DEL, GC): ``ContainerID`` and, optionally, ``Interface``."""
    _known(body, ("ContainerID", "Interface"), "network disconnect")
    container_id = parse_container_id(_str(body, "ContainerID", required=True))
    assert container_id is not None
    ifname = _str(body, "Interface")
    if ifname is not None:
        validate_ifname(ifname, "Interface")
    return container_id, ifname


def parse_connect(body: Any) -> Connect:
    b = _obj(body, "network connect")
    _known(
        b,
        (
            "Netns",
            "NetnsPath",
            "EndpointConfig",
            "Ports",
            "Interface",
            "ContainerID",
            "ExposedPorts",
            "PublishAllPorts",
            "Service",
        ),
        "",
    )
    target = parse_target(b)
    service = _str(b, "Service")
    cfg = _opt_obj(b, "EndpointConfig", "EndpointConfig")
    ipam = _opt_obj(cfg, "IPAMConfig", "EndpointConfig.IPAMConfig")
    v4 = _str(ipam, "IPv4Address")
    v6 = _str(ipam, "IPv6Address")
    ipv4 = parse_address(v4, "ip") if v4 else None
    ipv6 = parse_address(v6, "ip6") if v6 else None
    if ipv4 is not None and ipv4.version != 4:
        raise InvalidError(f"ip {v4!r} is not an IPv4 address (use --ip6)", field="ip")
    if ipv6 is not None and ipv6.version != 6:
        raise InvalidError(f"ip6 {v6!r} is not an IPv6 address", field="ip6")
    aliases_raw = _opt_list(cfg, "Aliases", "Aliases", "alias")
    if not all(isinstance(a, str) for a in aliases_raw):
        raise InvalidError("Aliases must be a list of names", field="alias")
    aliases = [validate_dns_name(a) for a in aliases_raw]
    links = [_parse_link(x) for x in _opt_list(cfg, "Links", "Links", "link")]
    ports = parse_ports(b.get("Ports"))
    exposed = b.get("ExposedPorts")
    if exposed is not None:
        checked = publish_all(exposed, ports)  # checked even without -P (documentation only then, as in Docker)
        ports = checked if _bool(b, "PublishAllPorts") else ports
    elif _bool(b, "PublishAllPorts"):
        raise InvalidError(
            "PublishAllPorts (-P) publishes the exposed ports: give them with --expose", field="expose"
        )
    mac = parse_mac(_str(cfg, "MacAddress"))
    ifname = _str(b, "Interface")
    if ifname is not None:
        validate_ifname(ifname, "Interface")
    container_id = parse_container_id(_str(b, "ContainerID"))
    prio = cfg.get("GwPriority", 0)
    if isinstance(prio, bool) or not isinstance(prio, int) or not GW_PRIORITY_MIN <= prio <= GW_PRIORITY_MAX:
        raise InvalidError(
            f"EndpointConfig.GwPriority {prio!r}: expected an integer from {GW_PRIORITY_MIN} to {GW_PRIORITY_MAX} "
            "(the highest of a namespace's networks carries its default route)",
            field="gw-priority",
        )
    return Connect(
        target=target,
        ipv4=ipv4,
        ipv6=ipv6,
        aliases=aliases,
        ports=ports,
        links=links,
        mac=mac,
        ifname=ifname,
        container_id=container_id,
        gw_priority=prio,
        service=service,
    )


def parse_mac(text: str | None) -> str | None:
    """A unicast MAC ``aa:bb:cc:dd:ee:ff`` (lower-cased), or None."""
    if text is None:
        return None
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise InvalidError(f"MacAddress {text!r} is not a MAC address like 02:42:ac:11:00:02", field="mac")
    if int(parts[0], 16) & 1:
        raise InvalidError(f"MacAddress {text!r} is a multicast address; use a unicast one", field="mac")
    if all(p == "00" for p in parts):
        raise InvalidError("MacAddress 00:00:00:00:00:00 is not usable; give another", field="mac")
    return ":".join(parts).lower()


def parse_container_id(text: str | None) -> str | None:
    """A runtime's container id (CNI: alphanumerics, '_', '.', '-'), at most 256 characters."""
    if text is None:
        return None
    if len(text) > 256 or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in text):
        raise InvalidError(
            f"ContainerID {text[:80]!r} is not valid: use up to 256 letters, digits, '_', '.' or '-'",
            field="ContainerID",
        )
    return text


def _parse_link(raw: Any) -> str:
    """``--link NAME[:ALIAS]``: a netns name and a DNS name."""
    if not isinstance(raw, str):
        raise InvalidError("Links must be a list of NAME:ALIAS strings", field="link")
    name, _, alias = raw.partition(":")
    validate_netns_name(name)
    if alias:
        validate_dns_name(alias)
    return f"{name}:{alias or name}"


PORT_PROTOS = ("tcp", "udp", "sctp")


def parse_ports(raw: Any) -> list[PortMapping]:
    """``Ports`` of a connect body (what ``netd-ctl -p`` sends): HostPort 0 means "the daemon picks one"."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidError("Ports must be a list of {HostIp, HostPort, ContainerPort, Proto}", field="publish")
    out: list[PortMapping] = []
    for i, entry in enumerate(raw):
        where = f"Ports[{i}]"
        if not isinstance(entry, dict):
            raise InvalidError(f"{where} must be an object", field="publish")
        for key in entry:
            if key not in ("HostIp", "HostPort", "ContainerPort", "Proto"):
                known = "ContainerPort, HostIp, HostPort, Proto"
                raise InvalidError(f"{where}: unknown field {key!r} (known: {known})", field="publish")
        proto = entry.get("Proto")
        proto = "tcp" if proto is None or proto == "" else proto
        if not isinstance(proto, str) or proto.lower() not in PORT_PROTOS:
            raise InvalidError(f"{where}.Proto {proto!r}: use one of {', '.join(PORT_PROTOS)}", field="publish")
        host_ip_text = entry.get("HostIp")
        host_ip_text = "" if host_ip_text is None else host_ip_text
        if not isinstance(host_ip_text, str):
            raise InvalidError(f"{where}.HostIp must be a string (an IP address)", field="publish")
        try:
            host_ip = ip_address(host_ip_text.strip("[]")) if host_ip_text else None
        except ValueError:
            raise InvalidError(f"{where}.HostIp {host_ip_text!r} is not an IP address", field="publish") from None
        if host_ip is not None and ("%" in host_ip_text or host_ip.is_multicast):
            raise InvalidError(
                f"{where}.HostIp {host_ip_text!r}: use a unicast address of this host, without a %zone",
                field="publish",
            )
        out.append(
            PortMapping(
                host_ip=host_ip,
                host_port=_port(entry.get("HostPort", 0), f"{where}.HostPort", zero_ok=True),
                container_port=_port(entry.get("ContainerPort"), f"{where}.ContainerPort", zero_ok=False),
                proto="udp" if proto.lower() == "udp" else "sctp" if proto.lower() == "sctp" else "tcp",
            )
        )
    return out


def _port(value: Any, where: str, *, zero_ok: bool) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        value = int(value)  # Docker sends strings; ASCII digits only (int() takes "1_0" and any script's digits)
    low = 0 if zero_ok else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        hint = " (0: netd picks a free host port)" if zero_ok else ""
        raise InvalidError(f"{where} {value!r}: a port must be a number {low}-65535{hint}", field="publish")
    return value


def validate_dns_name(name: str) -> str:
    if not is_dns_name(name):
        raise InvalidError(
            f"alias {name!r} is not a valid DNS name: use ASCII letters, digits and '-' (not first or last), "
            "dots between labels of at most 63, 253 in all",
            field="alias",
        )
    return name.lower()
