"""The JSON values stored under the keys of ``keys.KeyLayout`` (pure pydantic models).

Unknown fields are ignored when reading (``extra="ignore"``), unlike the state file: during a rolling upgrade
an older node must still read what a newer one wrote.  ``encode``/``decode`` are the only (de)serialisers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from netd.cluster.keys import Kind
from netd.core.model import IPAddress, IpamConfig, IPNetwork

VNI_MIN = 1
VNI_MAX = (1 << 24) - 1
VNI_AUTO_START = 4096  # Docker's overlay driver hands out VNIs from 4096 up (lower ones are for the user)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NodeRecord(_Record):
    """A node as the cluster knows it, alive or not (``/nodes/<name>``)."""

    name: str
    advertise_address: IPAddress
    vxlan_port: int = 4789
    version: str = ""  # netd's version on that node
    started: str = ""  # when this run of netd registered
    registered: str = ""  # the first registration of this node name
    last_seen: str = ""  # refreshed about once a minute while alive, and at a clean stop
    # the node's own local networks (bridges, host routes): automatic overlay subnets stay clear of them
    local_subnets: list[IPNetwork] = Field(default_factory=list)


class NodeAlive(_Record):
    """Present while the node's lease lives (``/alive/<name>``)."""

    name: str
    lease: int
    advertise_address: IPAddress
    since: str = ""


class OverlayNetwork(_Record):
    """A cluster-wide network (``/networks/<id>``): what ``network create -d overlay`` defined."""

    id: str
    name: str
    vni: int = Field(ge=VNI_MIN, le=VNI_MAX)
    ipam: list[IpamConfig] = Field(default_factory=list)  # subnet, gateway, ip-range, aux-addresses per family
    options: dict[str, str] = Field(default_factory=dict)
    attachable: bool = False
    internal: bool = False
    ingress: bool = False
    encrypted: bool = False
    enable_ipv6: bool = False
    mtu: int | None = None
    created: str = ""
    created_on: str = ""  # node name

    def pool(self, version: int) -> IpamConfig | None:
        for cfg in self.ipam:
            if cfg.subnet.version == version:
                return cfg
        return None


class NameReservation(_Record):
    network: str  # the network id holding the name


class VniReservation(_Record):
    network: str


class SubnetReservation(_Record):
    network: str
    subnet: IPNetwork


class Allocation(_Record):
    """An address taken in an overlay network (``/addresses/<network id>/<address>``)."""

    network: str
    address: IPAddress
    endpoint: str  # the endpoint id that holds it (a retried create recognises its own allocation)
    node: str
    created: str = ""


class EndpointRecord(_Record):
    """An endpoint on an overlay network, on whatever node (``/endpoints/<network id>/<id>``): what the other
    nodes need to program forwarding (MAC -> node) and neighbour (address -> MAC) entries and to answer DNS."""

    id: str
    network: str
    node: str
    name: str = ""
    mac: str
    ipv4: IPv4Interface | None = None
    ipv6: IPv6Interface | None = None
    aliases: list[str] = Field(default_factory=list)
    service: str | None = None  # issue 16
    created: str = ""


class ServicePort(_Record):
    """A port of a service (Docker's ``EndpointSpec.Ports[]``): ``target`` is the tasks' port (what the VIP
    forwards); ``published`` the port the routing mesh (``ingress``) or the task's node (``host``) answers on,
    None when it is reachable only through the VIP."""

    protocol: Literal["tcp", "udp"] = "tcp"
    target: int = Field(ge=1, le=65535)
    published: int | None = Field(default=None, ge=1, le=65535)
    mode: Literal["ingress", "host"] = "ingress"


class ServiceRecord(_Record):
    """A service (``/services/<id>``): a name, the overlay networks its tasks join, a VIP per network (``vip``
    mode; none with ``dnsrr``), its ports.  Its tasks are the endpoint records whose ``service`` is its name."""

    id: str
    name: str
    networks: list[str]  # overlay network ids, in the order given
    vips: dict[str, IPv4Address] = Field(default_factory=dict)  # network id -> VIP (vip mode)
    ports: list[ServicePort] = Field(default_factory=list)
    endpoint_mode: Literal["vip", "dnsrr"] = "vip"
    stickiness: Literal["none", "source-ip"] = "none"
    labels: dict[str, str] = Field(default_factory=dict)
    created: str = ""
    created_on: str = ""  # node name


class ServiceName(_Record):
    service: str  # the service id holding the name


class KeyGeneration(_Record):
    gen: int = Field(ge=1)
    key: str  # base64 of the 32-byte master key (netd.core.ipsecspec derives each SA's key and salt from it)


class NetworkKeys(_Record):
    """An encrypted network's keys (``/keys/<network id>``): readable by whoever can read etcd (see README).

    ``seq`` counts the steps published (creation 1, then accept, switch, prune of each rotation); every node with
    endpoints on the network acks the ``seq`` it applied (``/key-acks/...``) and the next step waits for all."""

    network: str
    vni: int = Field(ge=VNI_MIN, le=VNI_MAX)
    keys: list[KeyGeneration]
    tx: int  # the generation every node sends with
    seq: int = 1
    stage: str = "created"  # created | accept | switch | prune: the last step published
    rotated: str = ""  # when the newest generation was made (the rotation timer counts from here)


class KeyAck(_Record):
    """``/key-acks/<network id>/<node>``, under the node's lease: the key step it holds and its boot epoch."""

    network: str
    node: str
    seq: int
    epoch: int  # changes when the node's kernel lost its SAs (reboot): peers derive new SAs for it


RECORD_OF_KIND: dict[Kind, type[_Record]] = {
    "node": NodeRecord,
    "alive": NodeAlive,
    "network": OverlayNetwork,
    "network_name": NameReservation,
    "vni": VniReservation,
    "subnet": SubnetReservation,
    "address": Allocation,
    "endpoint": EndpointRecord,
    "service": ServiceRecord,
    "service_name": ServiceName,
    "key": NetworkKeys,
    "key_ack": KeyAck,
}

R = TypeVar("R", bound=_Record)


def encode(record: _Record) -> bytes:
    return record.model_dump_json(exclude_defaults=False).encode()


def decode(cls: type[R], value: bytes) -> R:
    """Raises ValueError (with the model's reason) for a value that is not a valid ``cls``."""
    try:
        return cls.model_validate_json(value)
    except ValidationError as e:
        raise ValueError(f"not a valid {cls.__name__}: {e.errors()[0]['msg']}") from e


def decode_kind(kind: Kind, value: bytes) -> _Record | None:
    """The record for a key of ``kind``; None for kinds without a model yet (keys)."""
    cls = RECORD_OF_KIND.get(kind)
    return decode(cls, value) if cls is not None else None


Record = _Record
