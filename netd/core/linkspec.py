"""What the kernel layer is asked to build and what it reports back (pure data, no pyroute2).

The planner turns the desired state into these specs; ``netd.kernel`` turns them into netlink requests and turns
the kernel's answers into ``Observed*`` values.  Ownership: every link netd creates in the daemon's own
namespace carries the interface alias ``netd:<owner-id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Literal

OWNER_PREFIX = "netd:"

Iface = IPv4Interface | IPv6Interface
Addr = IPv4Address | IPv6Address


def owner_alias(owner_id: str) -> str:
    return OWNER_PREFIX + owner_id


def owner_of(alias: str | None) -> str | None:
    if alias and alias.startswith(OWNER_PREFIX):
        return alias[len(OWNER_PREFIX) :]
    return None


@dataclass(frozen=True)
class NsRef:
    """A network namespace by the path of its nsfs file (``/run/netns/web``, ``/proc/42/ns/net``)."""

    path: str


@dataclass(frozen=True)
class NsProbe:
    """What a namespace path names: ``ident`` (st_dev, st_ino) of a live network namespace, or ``problem``."""

    ident: tuple[int, int] | None
    problem: str = ""  # "does not exist", "is a FIFO", ...; "" when ident is set
    own: str = ""  # "netd" / "init": the daemon's own or PID 1's namespace (never to be connected)


@dataclass(frozen=True)
class BridgeSpec:
    ifname: str
    owner: str  # network id; alias netd:<owner> unless adopted
    mtu: int | None
    addresses: tuple[Iface, ...]  # gateway addresses with the subnet's prefix length
    adopt: bool = False  # use an existing bridge of that name, never delete it
    # A fixed MAC: without one a bridge takes the lowest MAC of its ports, so the gateway's MAC would change
    # as endpoints come and go and peers would keep a stale neighbour entry for seconds.
    mac: str | None = None


@dataclass(frozen=True)
class VethSpec:
    host_ifname: str
    owner: str  # endpoint id; the host side gets alias netd:<owner>
    bridge: str  # master of the host side
    mtu: int | None
    netns: NsRef  # where the peer is created (directly, not create-then-move)
    peer_ifname: str
    mac: str  # of the peer
    addresses: tuple[Iface, ...]
    gateway4: IPv4Address | None = None  # default route via it, when set
    gateway6: IPv6Address | None = None
    # what a create announces (gratuitous ARP / unsolicited NA, netd.kernel.announce): the addresses a peer or
    # the host may hold in its neighbour cache with another MAC (the driver decides)
    announce: tuple[Iface, ...] = ()
    # the network has no IPv6: the peer generates no IPv6 address (no link-local: Docker disables IPv6 there),
    # so no DAD, MLD report or router solicitation is flooded to every port of the bridge
    ipv6_off: bool = False


@dataclass(frozen=True)
class ParentSpec:
    """The parent of macvlan/ipvlan children in the daemon's namespace (see ``netd.drivers.parent``)."""

    ifname: str
    owner: str  # network id: alias netd:<owner> when netd creates the link
    kind: Literal["existing", "vlan", "dummy"]
    managed: bool  # netd creates it when missing; False: someone else's, only checked
    base: str | None = None  # vlan: the link under the sub-interface
    vlan_id: int | None = None


@dataclass(frozen=True)
class ChildSpec:
    """A macvlan/ipvlan endpoint, created directly in its namespace on the parent."""

    kind: Literal["macvlan", "ipvlan"]
    owner: str  # endpoint id; the child gets alias netd:<owner>
    parent: str  # in the daemon's namespace
    mode: str  # macvlan: bridge|private|vepa|passthru; ipvlan: l2|l3|l3s
    flag: str | None  # ipvlan: bridge|private|vepa
    netns: NsRef
    peer_ifname: str  # the name inside the namespace (eth0, ...)
    mac: str | None  # None: the kernel's choice (ipvlan shares the parent's; passthru takes it)
    mtu: int | None
    addresses: tuple[Iface, ...]
    gateway4: IPv4Address | None = None
    gateway6: IPv6Address | None = None
    default_dev: bool = False  # ipvlan l3/l3s: default route through the interface itself
    kernel_mode: int = 0  # IFLA_MACVLAN_MODE / IFLA_IPVLAN_MODE of ``mode`` (the driver's table)
    kernel_flags: int = 0  # ipvlan: IFLA_IPVLAN_FLAGS of ``flag``


@dataclass(frozen=True)
class ShimSpec:
    """host_access: a macvlan (bridge mode) on the parent in the daemon's namespace, routes to the endpoints."""

    ifname: str
    owner: str  # network id
    parent: str
    address: Iface  # a /32 (/128) the host uses as source
    routes: tuple[IPv4Network | IPv6Network, ...]
    kernel_mode: int  # IFLA_MACVLAN_MODE (bridge)


@dataclass(frozen=True)
class ObservedLink:
    index: int
    ifname: str
    kind: str
    owner: str | None
    mtu: int
    up: bool
    master: int | None
    mac: str
    addresses: tuple[Iface, ...] = ()
    link_index: int | None = None  # IFLA_LINK: the lower device (vlan, macvlan, ipvlan)
    vlan_id: int | None = None


@dataclass(frozen=True)
class ObservedPeer:
    """An endpoint's interface seen from inside its namespace (what CNI's CHECK looks at): the link with its
    addresses, and the gateways of the default routes through it ("" for a route without a gateway)."""

    link: ObservedLink
    gateway4: str | None = None
    gateway6: str | None = None


@dataclass
class ObservedHost:
    """Owned links in the daemon's namespace, keyed by owner id, plus every link name (for conflict checks)."""

    bridges: dict[str, ObservedLink] = field(default_factory=dict)
    veths: dict[str, ObservedLink] = field(default_factory=dict)
    by_name: dict[str, ObservedLink] = field(default_factory=dict)
    by_index: dict[int, ObservedLink] = field(default_factory=dict)


@dataclass(frozen=True)
class ObservedChild:
    """An owned macvlan/ipvlan child found in an endpoint namespace."""

    link: ObservedLink
    ns_path: str
