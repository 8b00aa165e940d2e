"""The overlay data plane's kernel contract (pure data and pure checks, no pyroute2).

Per overlay network on a node: a bridge (a :class:`netd.core.linkspec.BridgeSpec`, the gateway address on it) and a
VXLAN device enslaved to it (:class:`VxlanSpec`).  Remote endpoints are programmed statically on the VXLAN
device, as Docker's overlay driver and flannel's vxlan backend do: a forwarding (FDB) entry "endpoint MAC ->
remote node's underlay address" and a neighbour entry "endpoint address -> MAC" per address, both permanent.
Learning is off (as flannel's default; Docker's driver turns learning and l2miss/l3miss on) and ``proxy`` is on
(the VXLAN driver answers ARP/ND from the neighbour table), with no group, no default remote and no all-zero FDB
entry: nothing is flooded, an unknown MAC or address is dropped.

``plan_vxlan`` and ``plan_entries`` compare what is wanted with what the kernel reported and say what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from netd.core.errors import InvalidError

Addr = IPv4Address | IPv6Address

VXLAN_PORT = 4789  # IANA
VNI_MIN, VNI_MAX = 1, (1 << 24) - 1
PORT_MIN, PORT_MAX = 1, 65535
MTU_MIN, MTU_MAX = 68, 65535
IFNAMSIZ = 15  # bytes, without the trailing NUL
# outer Ethernet 14 + IP (20 or 40) + UDP 8 + VXLAN 8: the kernel's VXLAN_HEADROOM / VXLAN6_HEADROOM
VXLAN_OVERHEAD = {4: 50, 6: 70}
ZERO_MAC = "00:00:00:00:00:00"


# ---------------------------------------------------------------------------------------------- validation


def validate_vni(vni: int, field: str = "vni") -> int:
    if isinstance(vni, bool) or not isinstance(vni, int) or not VNI_MIN <= vni <= VNI_MAX:
        raise InvalidError(f"{field}: {vni!r} is not a VXLAN id; use {VNI_MIN}-{VNI_MAX}", field=field)
    return vni


def validate_port(port: int, field: str = "port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not PORT_MIN <= port <= PORT_MAX:
        raise InvalidError(
            f"{field}: {port!r} is not a UDP port; use {PORT_MIN}-{PORT_MAX} (VXLAN's is {VXLAN_PORT})",
            field=field,
        )
    return port


def validate_mtu(mtu: int, field: str = "mtu") -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not MTU_MIN <= mtu <= MTU_MAX:
        raise InvalidError(f"{field}: {mtu!r} is out of range; use {MTU_MIN}-{MTU_MAX}", field=field)
    return mtu


def validate_ifname(name: str, field: str = "ifname") -> str:
    raw = name.encode() if isinstance(name, str) else b""
    if not raw or len(raw) > IFNAMSIZ or name in (".", "..") or any(c in name for c in "/: \t\n\0"):
        raise InvalidError(
            f'{field}: "{name}" is not an interface name; use 1-{IFNAMSIZ} bytes without "/", ":" or spaces',
            field=field,
        )
    return name


def normalize_mac(mac: str, field: str = "mac") -> str:
    parts = mac.split(":") if isinstance(mac, str) else []
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise InvalidError(f'{field}: "{mac}" is not a MAC address; write it as 02:42:0a:00:00:02', field=field)
    mac = mac.lower()
    if mac == ZERO_MAC or int(parts[0], 16) & 1:
        raise InvalidError(f'{field}: "{mac}" is not a unicast MAC address; use a unicast one', field=field)
    return mac


def overlay_mtu(underlay_mtu: int, local: Addr) -> int:
    """The VXLAN device's MTU when none is given: the underlay's minus the encapsulation."""
    return validate_mtu(underlay_mtu - VXLAN_OVERHEAD[local.version], "underlay mtu")


# ---------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class VxlanSpec:
    """One overlay network's VXLAN device on this node (in the daemon's namespace)."""

    ifname: str
    owner: str  # network id: alias netd:<owner>
    vni: int
    local: Addr  # the node's advertise (underlay) address: the source of the VXLAN packets
    master: str  # the network's bridge
    port: int = VXLAN_PORT  # UDP destination port
    mtu: int | None = None  # None: the underlay's MTU minus 50 (70 over IPv6)

    def __post_init__(self) -> None:
        validate_ifname(self.ifname)
        validate_ifname(self.master, "master")
        validate_vni(self.vni)
        validate_port(self.port)
        if self.mtu is not None:
            validate_mtu(self.mtu)
        if self.local.is_unspecified or self.local.is_multicast:
            raise InvalidError(f"local: {self.local} is not a unicast underlay address", field="local")


@dataclass(frozen=True)
class PeerEntry:
    """A remote endpoint: its MAC and addresses, and the underlay address of the node it lives on."""

    mac: str
    addresses: tuple[Addr, ...]
    vtep: Addr

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", normalize_mac(self.mac))
        if self.vtep.is_unspecified or self.vtep.is_multicast:
            raise InvalidError(f"vtep: {self.vtep} is not a unicast underlay address (no flooding)", field="vtep")


# ---------------------------------------------------------------------------------------------- observed


@dataclass(frozen=True)
class ObservedVxlan:
    index: int
    ifname: str
    owner: str | None
    alias: str | None
    vni: int
    port: int
    local: Addr | None
    group: Addr | None  # multicast group or default remote: netd never sets one
    learning: bool
    proxy: bool
    l2miss: bool
    l3miss: bool
    mtu: int
    up: bool
    master: int | None


@dataclass(frozen=True)
class FdbEntry:
    """A forwarding entry of the VXLAN device itself (NTF_SELF): frames to ``mac`` go to ``dst``."""

    mac: str
    dst: Addr | None  # None: no remote address (should not happen on netd's devices)
    permanent: bool = True


@dataclass(frozen=True)
class NeighEntry:
    """A neighbour entry on the VXLAN device: what its ARP/ND proxy answers for ``ip``."""

    ip: Addr
    mac: str
    permanent: bool = True


@dataclass(frozen=True)
class ObservedEntries:
    fdb: tuple[FdbEntry, ...] = ()
    neigh: tuple[NeighEntry, ...] = ()


@dataclass(frozen=True)
class EntryPlan:
    """What to write so that a VXLAN device's entries are exactly the wanted ones."""

    fdb_put: tuple[FdbEntry, ...] = ()
    fdb_del: tuple[FdbEntry, ...] = ()
    neigh_put: tuple[NeighEntry, ...] = ()
    neigh_del: tuple[NeighEntry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fdb_put or self.fdb_del or self.neigh_put or self.neigh_del)


@dataclass(frozen=True)
class VxlanDrift:
    """``recreate``: what cannot be changed in place (the device must be made again, and its entries with it);
    ``change``: link attributes to set (mtu, master, up, alias)."""

    recreate: tuple[str, ...] = ()
    change: tuple[str, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.recreate or self.change)


# ---------------------------------------------------------------------------------------------- plans


def plan_vxlan(spec: VxlanSpec, seen: ObservedVxlan, mtu: int, master_index: int) -> VxlanDrift:
    """How the device ``seen`` differs from ``spec`` (``mtu``: the spec's, or the one derived from the underlay;
    ``master_index``: the bridge's ifindex)."""
    recreate = []
    if seen.vni != spec.vni:
        recreate.append(f"vni {seen.vni} != {spec.vni}")
    if seen.port != spec.port:
        recreate.append(f"port {seen.port} != {spec.port}")
    if seen.local != spec.local:
        recreate.append(f"local {seen.local} != {spec.local}")
    if seen.group is not None:
        recreate.append(f"group/remote {seen.group} set")
    for name, have, want in (
        ("learning", seen.learning, False),
        ("proxy", seen.proxy, True),
        ("l2miss", seen.l2miss, False),
        ("l3miss", seen.l3miss, False),
    ):
        if have != want:
            recreate.append(f"{name} {'on' if have else 'off'}")
    change = []
    if seen.alias is None:
        change.append("alias")
    if seen.mtu != mtu:
        change.append("mtu")
    if seen.master != master_index:
        change.append("master")
    if not seen.up:
        change.append("up")
    return VxlanDrift(tuple(recreate), tuple(change))


def build_entries(peers: tuple[PeerEntry, ...] | list[PeerEntry]) -> tuple[list[FdbEntry], list[NeighEntry]]:
    """The FDB and neighbour entries for ``peers`` (one FDB entry per MAC, one neighbour entry per address).

    Two peers claiming one MAC or one address is a control-plane bug: refused, naming both."""
    fdb: dict[str, FdbEntry] = {}
    neigh: dict[Addr, NeighEntry] = {}
    for peer in peers:
        old = fdb.get(peer.mac)
        if old is not None and old.dst != peer.vtep:
            raise InvalidError(f"peer {peer.mac}: on two nodes ({old.dst} and {peer.vtep}); remove the stale one")
        fdb[peer.mac] = FdbEntry(peer.mac, peer.vtep)
        for ip in peer.addresses:
            had = neigh.get(ip)
            if had is not None and had.mac != peer.mac:
                raise InvalidError(f"peer address {ip}: claimed by {had.mac} and {peer.mac}; remove the stale one")
            neigh[ip] = NeighEntry(ip, peer.mac)
    return sorted(fdb.values(), key=lambda e: e.mac), sorted(neigh.values(), key=lambda n: (n.ip.version, n.ip))


def check_vtep_family(peers: tuple[PeerEntry, ...] | list[PeerEntry], local: Addr | None) -> None:
    """A VXLAN device sends over one IP version (its local address's): a peer on the other is unreachable."""
    if local is None:
        return
    for peer in peers:
        if peer.vtep.version != local.version:
            raise InvalidError(
                f"peer {peer.mac}: node address {peer.vtep} is IPv{peer.vtep.version} but this node's VXLAN "
                f"device sends from {local} (IPv{local.version}); give every node an advertise address of one "
                "IP version",
                field="vtep",
            )


def plan_entries(peers: tuple[PeerEntry, ...] | list[PeerEntry], seen: ObservedEntries) -> EntryPlan:
    """Entries to replace (missing, pointing elsewhere, not permanent) and to delete (not wanted: stale peers,
    learned entries, an all-zero flooding entry)."""
    want_fdb, want_neigh = build_entries(peers)
    have_fdb: dict[str, FdbEntry | None] = {}
    for e in seen.fdb:  # a MAC with several remotes (appended by hand) is deleted whole, then put back
        have_fdb[e.mac] = e if e.mac not in have_fdb else None
    have_neigh = {e.ip: e for e in seen.neigh}
    wanted_macs = {e.mac for e in want_fdb}
    wanted_ips = {e.ip for e in want_neigh}
    multi = {mac for mac, e in have_fdb.items() if e is None}
    return EntryPlan(
        fdb_put=tuple(e for e in want_fdb if have_fdb.get(e.mac, False) != e),
        fdb_del=tuple(
            sorted({e for e in seen.fdb if e.mac not in wanted_macs or e.mac in multi}, key=lambda e: e.mac)
        ),
        neigh_put=tuple(e for e in want_neigh if have_neigh.get(e.ip) != e),
        neigh_del=tuple(e for e in seen.neigh if e.ip not in wanted_ips),
    )
