"""Desired-state models (pure: no kernel, no firewall, no HTTP imports).

The desired state is the single source of truth the reconciler drives the kernel towards.  IPAM allocations are
not stored separately: an address is taken exactly when an endpoint (or a gateway / aux-address) holds it, so a
removed endpoint can never leak an address.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
IPInterface = IPv4Interface | IPv6Interface

Driver = Literal["bridge", "macvlan", "ipvlan", "overlay"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IpamConfig(_Model):
    """One address pool of a network (Docker's ``IPAM.Config[]`` entry)."""

    subnet: IPNetwork
    gateway: IPAddress | None = None
    ip_range: IPNetwork | None = None
    aux_addresses: dict[str, IPAddress] = Field(default_factory=dict)


class PortMapping(_Model):
    """A published port (``-p [host_ip:]host_port:container_port[/proto]``)."""

    host_ip: IPAddress | None = None
    host_port: int
    container_port: int
    proto: Literal["tcp", "udp", "sctp"] = "tcp"


class ParentLink(_Model):
    """The link macvlan/ipvlan endpoints hang off (resolved at creation, see ``netd.drivers.parent``)."""

    ifname: str  # eth0, eth0.50, or netd's dummy dm-<id>
    kind: Literal["existing", "vlan", "dummy"] = "existing"
    base: str | None = None  # vlan: the link the 802.1q sub-interface sits on
    vlan_id: int | None = None
    managed: bool = False  # netd creates it (and removes it with the last network using it)


class Network(_Model):
    id: str
    name: str
    driver: Driver = "bridge"
    internal: bool = False
    enable_ipv6: bool = False
    ipam: list[IpamConfig] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)
    # Resolved from the options at creation time, so the reconciler never parses option strings.
    bridge: str
    bridge_adopted: bool = False  # the bridge existed before netd: netd never deletes it
    icc: bool = True
    masquerade: bool = True
    mtu: int | None = None
    is_default: bool = False
    gateway_mode_ipv6: Literal["nat", "routed"] = "nat"  # routed: no NAT66, the subnet is reachable from outside
    default_gateway6: IPv6Address | None = None  # daemon.json default-gateway-v6
    default_gateway4: IPv4Address | None = (
        None  # daemon.json default-gateway: endpoints route via it, not the bridge
    )
    # macvlan / ipvlan (bridge is "" for them)
    parent: ParentLink | None = None
    mode: str | None = None  # macvlan_mode or ipvlan_mode
    ipvlan_flag: str | None = None
    host_access: bool = False  # a host-side macvlan shim with a route to the network's range
    # overlay (defined in the cluster store, mirrored here by every node; see netd.multihost)
    vni: int | None = None
    vxlan: str = ""  # the VXLAN device on the bridge
    attachable: bool = False  # plain namespaces may connect (Docker's --attachable)
    ingress: bool = False  # the routing mesh's overlay network (Docker's --ingress; netd.multihost.mesh)
    labels: dict[str, str] = Field(default_factory=dict)  # Docker's network labels (filters, prune)
    # whether an endpoint with a MacAddress of its own has been on this network: then a peer may cache another
    # MAC for an address, so every new endpoint announces its IPv4 addresses too (set for good at such a
    # connect; see netd.drivers.bridge.announced).  None: a network from a state written before netd kept
    # this (its history is unknown: everything is announced, as then)
    custom_macs: bool | None = None
    created: str = ""

    def pool(self, version: int) -> IpamConfig | None:
        for cfg in self.ipam:
            if cfg.subnet.version == version:
                return cfg
        return None


class Endpoint(_Model):
    id: str
    network: str  # Network.id
    netns: str | None = None  # a netd-owned netns (by name)
    netns_path: str | None = None  # someone else's namespace (/proc/PID/ns/net, /run/netns/x, ...)
    netns_inode: int | None = None  # of netns_path at connect time: a reused PID's namespace is not ours
    ifname: str  # inside the namespace: eth0, eth1, ...
    host_ifname: str  # the host side of the veth pair
    mac: str
    ipv4: IPv4Interface | None = None
    ipv6: IPv6Interface | None = None
    aliases: list[str] = Field(default_factory=list)
    links: list[str] = Field(default_factory=list)  # Docker's legacy --link NAME:ALIAS (default bridge only)
    default_route: bool = True  # carries its namespace's default route (netd.core.gateway decides which)
    gw_priority: int = 0  # Docker's --gw-priority: the highest of a namespace's endpoints carries the default
    ports: list[PortMapping] = Field(default_factory=list)
    gw_for: str | None = None  # docker_gwbridge: the overlay endpoint this one carries the way out for
    service: str | None = None  # overlay: a task of this service (``network connect --service NAME``)
    # set when a container runtime attached it through the CNI plugin (CNI_CONTAINERID): DEL and GC find CNI
    # endpoints by it, and inspect shows it
    container_id: str | None = None
    created: str = ""

    @property
    def target(self) -> str:
        """A stable key for the namespace the endpoint lives in."""
        return f"netns:{self.netns}" if self.netns is not None else f"path:{self.netns_path}"


class Netns(_Model):
    name: str
    # Docker's --network none (lo only) or host (a name for netd's own namespace); connects refused for both
    network: Literal["none", "host"] | None = None
    created: str = ""


class DesiredState(_Model):
    schema_version: int = SCHEMA_VERSION
    networks: dict[str, Network] = Field(default_factory=dict)  # by name
    netns: dict[str, Netns] = Field(default_factory=dict)  # by name
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)  # by id

    def copy_for_change(self) -> DesiredState:
        """A copy whose three maps may be changed freely; the objects in them are shared, never changed in place.

        A deep copy of the whole state per request grew with the number of endpoints (22% of a connect at 200).
        """
        return self.model_copy(
            update={"networks": dict(self.networks), "netns": dict(self.netns), "endpoints": dict(self.endpoints)}
        )

    def network_by_id(self, net_id: str) -> Network | None:
        for net in self.networks.values():
            if net.id == net_id:
                return net
        return None

    def endpoints_of(self, net_id: str) -> list[Endpoint]:
        return [ep for ep in self.endpoints.values() if ep.network == net_id]

    def endpoints_in(self, target: str) -> list[Endpoint]:
        return [ep for ep in self.endpoints.values() if ep.target == target]
