"""Pure translations between the cluster's records and one node's desired state and kernel entries."""

from __future__ import annotations

from collections.abc import Iterable

from netd.cluster.records import EndpointRecord, NodeAlive, OverlayNetwork
from netd.core.ipsecspec import ESP_OVERHEAD
from netd.core.model import DesiredState, Endpoint, IPInterface, Network
from netd.core.vxlanspec import PeerEntry
from netd.drivers.overlay import overlay_link_names


def network_from_record(rec: OverlayNetwork, default_mtu: int, created_here: Network | None = None) -> Network:
    """This node's copy of an overlay network (its MTU: the one asked for, else this node's underlay - 50, and
    - ESP_OVERHEAD more for an encrypted one, so its packets are never fragmented after ESP)."""
    bridge, vxlan = overlay_link_names(rec.id)
    return Network(
        id=rec.id,
        name=rec.name,
        driver="overlay",
        internal=rec.internal,
        enable_ipv6=rec.enable_ipv6,
        ipam=list(rec.ipam),
        options=dict(rec.options),
        bridge=bridge,
        vxlan=vxlan,
        vni=rec.vni,
        attachable=rec.attachable,
        ingress=rec.ingress,
        mtu=rec.mtu or (default_mtu - ESP_OVERHEAD if rec.encrypted else default_mtu),
        created=rec.created,
    )


def endpoint_name(ep: Endpoint) -> str:
    """The name an endpoint answers to across the cluster: its netd netns (a --netns-path one has none)."""
    return ep.netns or ""


def endpoint_record(ep: Endpoint, node: str) -> EndpointRecord:
    return EndpointRecord(
        id=ep.id,
        network=ep.network,
        node=node,
        name=endpoint_name(ep),
        mac=ep.mac,
        ipv4=ep.ipv4,
        ipv6=ep.ipv6,
        aliases=list(ep.aliases),
        service=ep.service,
        created=ep.created,
    )


def same_record(a: EndpointRecord, b: EndpointRecord) -> bool:
    """Equal in what other nodes use (``created`` aside)."""
    keys = ("id", "network", "node", "name", "mac", "ipv4", "ipv6", "aliases", "service")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def local_overlay_endpoints(state: DesiredState) -> dict[str, Endpoint]:
    overlay = {n.id for n in state.networks.values() if n.driver == "overlay"}
    return {ep.id: ep for ep in state.endpoints.values() if ep.network in overlay}


def peers_of(records: Iterable[EndpointRecord], alive: dict[str, NodeAlive], me: str) -> list[PeerEntry]:
    """The remote endpoints to program: on alive nodes other than this one; of two records claiming one MAC or
    one address (a stale one, say after ``node rm`` raced a reconnect) the newer wins."""
    by_mac: dict[str, EndpointRecord] = {}
    by_ip: dict[object, EndpointRecord] = {}
    for rec in sorted(records, key=lambda r: (r.created, r.id)):
        if rec.node == me or rec.node not in alive:
            continue
        for ip in _ips(rec):
            old = by_ip.get(ip)
            if old is not None:
                by_mac.pop(old.mac, None)
            by_ip[ip] = rec
        by_mac[rec.mac] = rec
    out = []
    for rec in by_mac.values():
        vtep = alive[rec.node].advertise_address
        out.append(PeerEntry(mac=rec.mac, addresses=tuple(i.ip for i in _ifaces(rec)), vtep=vtep))
    return sorted(out, key=lambda p: p.mac)


def _ifaces(rec: EndpointRecord) -> list[IPInterface]:
    return [i for i in (rec.ipv4, rec.ipv6) if i is not None]


def _ips(rec: EndpointRecord) -> list[object]:
    return [i.ip for i in _ifaces(rec)]
