"""The overlay driver (pure): one network across nodes, a bridge + VXLAN device per node that has endpoints on it.

The definition lives in the cluster store (etcd) and every node mirrors it into its desired state
(``netd.multihost``); this module only plans one node's kernel from it:

- per overlay network with local endpoints: a bridge (the gateway address, a MAC of this node's own) and a VXLAN
  device on it (the network's VNI, learning off, proxy on, local = this node's advertise address);
- an endpoint: a veth on that bridge, as for a bridge network, without a default route (the way out is the
  node's ``docker_gwbridge``);
- the remote endpoints: static FDB (MAC -> node) and neighbour (address -> MAC) entries on the VXLAN device,
  from what the cluster cache says (``OverlaySeen.peers``, gathered by the daemon's observer: the reconciler
  reads the cache, never etcd);
- nothing is forwarded between an overlay bridge and anything else (``Features.routed`` False).

The create path is not ``build_network``: an overlay network is made by the cluster (netd.multihost.overlay),
which needs the VNI and subnets to be unique cluster-wide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from netd.core.actions import MISSING, Action, DeleteLinks, DriverAction, EnsureBridge, Observed, Scope
from netd.core.errors import InvalidError
from netd.core.linkspec import BridgeSpec, ObservedHost
from netd.core.model import DesiredState, Endpoint, Network
from netd.core.naming import host_veth_name, mac_for
from netd.core.request import OPT_MTU
from netd.core.vxlanspec import (
    VNI_MAX,
    VNI_MIN,
    EntryPlan,
    ObservedEntries,
    ObservedVxlan,
    PeerEntry,
    VxlanSpec,
    plan_entries,
)
from netd.core.vxlanspec import plan_vxlan as plan_vxlan_drift

from .base import DriverOptions, Features
from .bridge import BRIDGE, bridge_drift, build_bridge_spec
from .overlay_crypto import OPT_ENCRYPTED, parse_encrypted

OPT_VXLANID = "com.docker.network.driver.overlay.vxlanid_list"
OVERLAY = "overlay"
NO_CLUSTER = (
    "overlay networks need a cluster: add a [cluster] section to netd.toml with etcd_endpoints = "
    '["http://ETCD:2379"] (and node_name / advertise_address if the defaults do not fit), then restart netd'
)


@dataclass(frozen=True)
class OverlayOptions(DriverOptions):
    vni: int | None = None
    encrypted: bool = False  # -o encrypted: its VXLAN traffic between nodes goes in IPsec ESP (issue 17)


@dataclass
class OverlaySeen:
    """What the daemon's overlay observer found for one reconcile (``Observed.extra["overlay"]``)."""

    node: str
    local: Any  # this node's advertise address (IPv4Address | IPv6Address)
    port: int
    active: set[str] = field(default_factory=set)  # overlay network ids with endpoints on this node
    vxlan: dict[str, ObservedVxlan | None] = field(default_factory=dict)  # by network id (active, in scope)
    entries: dict[str, ObservedEntries] = field(default_factory=dict)
    peers: dict[str, list[PeerEntry]] = field(default_factory=dict)  # remote endpoints on alive nodes
    underlay_mtu: int = 1500
    # the ingress network's id -> this node's own address on it (its ingress-sbox, netd.multihost.mesh): on
    # the ingress bridge beside the gateway, so routing-mesh connections leave SNAT'd to it
    sbox: dict[str, Any] = field(default_factory=dict)


def parse_vni(options: Mapping[str, str]) -> int | None:
    raw = options.get(OPT_VXLANID)
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if len(parts) != 1 or not parts[0].isdigit():
        raise InvalidError(
            f"option {OPT_VXLANID}={raw!r}: give one VNI, a number from {VNI_MIN} to {VNI_MAX} (e.g. 4097)",
            field=OPT_VXLANID,
        )
    vni = int(parts[0])
    if not VNI_MIN <= vni <= VNI_MAX:
        raise InvalidError(
            f"option {OPT_VXLANID}={raw!r}: VNI {vni} is out of range {VNI_MIN}-{VNI_MAX}", field=OPT_VXLANID
        )
    return vni


def overlay_link_names(net_id: str) -> tuple[str, str]:
    """(bridge, VXLAN device) of an overlay network on a node."""
    return "ov-" + net_id[:12], "vx-" + net_id[:12]


def overlay_mac(ipv4: Any) -> str:
    """Docker's endpoint MAC on overlay networks: 02:42 + the IPv4 address, so a reused address keeps its MAC."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipv4.packed)


def bridge_mac(net_id: str, node: str) -> str:
    """The gateway's MAC on one node: its own per node (every node has the gateway address on its bridge)."""
    return mac_for(hashlib.sha256(f"{net_id}:{node}".encode()).hexdigest())


@dataclass(frozen=True)
class EnsureVxlan(DriverAction):
    spec: VxlanSpec
    owner: str
    reason: str

    def describe(self) -> str:
        return f"ensure vxlan {self.spec.ifname} vni {self.spec.vni} on {self.spec.master} ({self.reason})"

    async def apply(self, kernel: Any) -> None:
        await kernel.ensure_vxlan(self.spec)


@dataclass(frozen=True)
class SyncPeers(DriverAction):
    """Make the VXLAN device's FDB and neighbour entries exactly those of ``peers``: write ``diff`` (planned
    from what the observe found on the device ``index``), or, for a device this pass creates, let the kernel
    layer compare and write the difference; in batches either way."""

    ifname: str
    peers: tuple[PeerEntry, ...]
    owner: str
    reason: str
    diff: EntryPlan | None = None
    index: int | None = None

    def describe(self) -> str:
        return f"program {len(self.peers)} remote endpoint(s) on {self.ifname} ({self.reason})"

    async def apply(self, kernel: Any) -> None:
        if self.diff is not None:
            await kernel.apply_vxlan_entries(self.ifname, self.diff, self.index)
        else:
            await kernel.ensure_vxlan_peers(self.ifname, list(self.peers))


def _seen(observed: Observed) -> OverlaySeen | None:
    seen = observed.extra.get(OVERLAY)
    return seen if isinstance(seen, OverlaySeen) else None


class Overlay:
    name: str = OVERLAY
    options: tuple[str, ...] = (OPT_MTU, OPT_VXLANID, OPT_ENCRYPTED)

    def parse_options(self, options: Mapping[str, str]) -> OverlayOptions:
        return OverlayOptions(vni=parse_vni(options), encrypted=parse_encrypted(options))

    def create_observes(self, base: Network, opts: DriverOptions) -> Collection[str] | None:
        return ()

    def build_network(
        self, base: Network, opts: DriverOptions, host: ObservedHost, state: DesiredState
    ) -> Network:
        raise InvalidError(NO_CLUSTER, field="Driver")  # the cluster creates overlay networks (netd.multihost)

    def check_connect(self, net: Network, state: DesiredState) -> None:
        if not net.attachable:
            raise InvalidError(
                f"network {net.name!r} is not attachable: only services may use it; create an overlay network "
                "with --attachable to connect namespaces to it",
                field="network",
            )

    def features(self, net: Network) -> Features:
        return Features(
            filtered=True,
            nat=False,
            published_ports=False,
            dns=True,
            routed=False,
            local_links_only=True,
            scope="swarm",
        )

    def link_names(self, net: Network) -> set[str]:
        return {n for n in (net.bridge, net.vxlan) if n}

    def endpoint_host_ifname(self, ep_id: str) -> str:
        return host_veth_name(ep_id)

    def endpoint_mac(self, net: Network, ep_id: str, ipv4: IPv4Address | None) -> str:
        return mac_for(ep_id)  # replaced by overlay_mac(address) once the cluster gave the address

    def observes_endpoint_netns(self, net: Network) -> bool:
        return False

    def _vxlan_spec(self, net: Network, seen: OverlaySeen) -> VxlanSpec:
        assert net.vni is not None
        return VxlanSpec(
            ifname=net.vxlan,
            owner=net.id,
            vni=net.vni,
            local=seen.local,
            master=net.bridge,
            port=seen.port,
            mtu=net.mtu,
        )

    async def observe_extra(self, kernel: Any, desired: DesiredState, scope: Scope) -> Any:
        """None: the overlay's reading needs the cluster cache as well as the kernel, so cluster mode's observer
        (netd.multihost.node) fills ``Observed.extra["overlay"]`` with an ``OverlaySeen``."""
        return None

    def plan_network(self, net: Network, observed: Observed) -> list[Action]:
        seen = _seen(observed)
        if seen is None or net.id not in seen.active:
            return []
        spec = _bridge_spec(net, seen)
        out: list[Action] = []
        bridge = observed.host.bridges.get(net.id)
        reason = bridge_drift(spec, bridge)
        if reason is not None:
            out.append(EnsureBridge(spec, owner=net.id, reason=reason))
        vx = seen.vxlan.get(net.id)
        vspec = self._vxlan_spec(net, seen)
        why = MISSING if vx is None or reason == MISSING else None
        if why is None and vx is not None:
            mtu = net.mtu or seen.underlay_mtu - 50
            drift = plan_vxlan_drift(vspec, vx, mtu, bridge.index if bridge is not None else -1)
            why = ", ".join((*drift.recreate, *drift.change)) or None
        if why is not None:
            out.append(EnsureVxlan(vspec, owner=net.id, reason=why))
        return out

    def plan_endpoint(
        self, ep: Endpoint, net: Network, ns_path: str, observed: Observed, refresh: bool = False
    ) -> list[Action]:
        return BRIDGE.plan_endpoint(ep, net, ns_path, observed, refresh)  # a veth on the bridge, as there

    def plan_extra(self, desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]:
        seen = _seen(observed)
        if seen is None:
            return []
        out: list[Action] = []
        for net in desired.networks.values():
            if net.driver != OVERLAY or net.id not in seen.active or not scope.has_network(net.id):
                continue
            peers = tuple(seen.peers.get(net.id, ()))
            vx = seen.vxlan.get(net.id)
            bridge = observed.host.bridges.get(net.id)
            if vx is None or bridge is None:
                out.append(SyncPeers(net.vxlan, peers, owner=net.id, reason="new device"))
                continue
            drift = plan_vxlan_drift(
                self._vxlan_spec(net, seen), vx, net.mtu or seen.underlay_mtu - 50, bridge.index
            )
            if drift.recreate:  # made again by this pass: a new device, nothing on it
                out.append(SyncPeers(net.vxlan, peers, owner=net.id, reason="device made again"))
                continue
            diff = plan_entries(list(peers), seen.entries.get(net.id, ObservedEntries()))
            if diff:
                why = (
                    f"+{len(diff.fdb_put)}/-{len(diff.fdb_del)} fdb, "
                    f"+{len(diff.neigh_put)}/-{len(diff.neigh_del)} neighbour"
                )
                out.append(SyncPeers(net.vxlan, peers, owner=net.id, reason=why, diff=diff, index=vx.index))
        return out

    def plan_cleanup(self, desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]:
        """The VXLAN device and bridge of an overlay network without local endpoints (the bridge driver removes
        owned bridges of networks that are gone altogether; the VXLAN devices of those go here too)."""
        seen = _seen(observed)
        host = observed.host
        active = seen.active if seen is not None else None
        doomed: list[str] = []
        wanted = {n.id for n in desired.networks.values()}
        for net in desired.networks.values():
            if net.driver != OVERLAY or not scope.has_network(net.id) or active is None or net.id in active:
                continue
            if net.vxlan in host.by_name and host.by_name[net.vxlan].owner == net.id:
                doomed.append(net.vxlan)
            if net.id in host.bridges and not desired.endpoints_of(net.id):
                doomed.append(host.bridges[net.id].ifname)
        for link in host.by_name.values():
            gone = link.kind == "vxlan" and link.owner is not None and link.owner not in wanted
            if gone and link.owner is not None and scope.has_network(link.owner):
                doomed.append(link.ifname)
        return [DeleteLinks(tuple(sorted(set(doomed))), owner="networks")] if doomed else []


def _bridge_spec(net: Network, seen: OverlaySeen) -> BridgeSpec:
    spec = build_bridge_spec(net)
    own = seen.sbox.get(net.id)
    return BridgeSpec(
        ifname=spec.ifname,
        owner=spec.owner,
        mtu=spec.mtu,
        addresses=(*spec.addresses, own) if own is not None and own not in spec.addresses else spec.addresses,
        adopt=False,
        mac=bridge_mac(net.id, seen.node),
    )


OVERLAY_DRIVER = Overlay()
