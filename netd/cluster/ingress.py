"""The ingress network in etcd: each node's own address on it (its *ingress-sbox* endpoint) and the default
ingress network that the first service publishing a routing-mesh port makes.

A node's ingress address is an endpoint record like a task's (``/endpoints/<ingress id>/ingress-sbox.<node>``)
with the node's ingress bridge MAC, and an address allocation held by that id on the node: the other nodes
program it as a remote endpoint (FDB MAC -> node, neighbour address -> MAC) like any other, which is what lets
a task on another node answer a routing-mesh connection that the node SNAT'd to that address.  It is taken
when the node first sees the ingress network and kept across restarts (the same id finds its own allocation
again); ``node rm`` frees it with the node's other allocations and ``network rm`` of the ingress deletes it.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import structlog

from netd.cluster.ipam import ClusterIpam
from netd.cluster.keys import KeyLayout
from netd.cluster.records import Allocation, EndpointRecord, OverlayNetwork, encode, now
from netd.cluster.txn import Put

log = structlog.get_logger("netd.cluster")

SBOX_PREFIX = "ingress-sbox."
DEFAULT_NAME = "ingress"
DEFAULT_SUBNET = "10.0.0.0/24"  # Docker's default ingress subnet


def sbox_id(node: str) -> str:
    """The endpoint id of ``node``'s ingress-sbox (node names are ``[A-Za-z0-9_.-]``: a valid key part)."""
    return SBOX_PREFIX + node


def is_sbox(endpoint_id: str) -> bool:
    return endpoint_id.startswith(SBOX_PREFIX)


def sbox_record(net: OverlayNetwork, node: str, address: IPv4Interface, mac: str) -> EndpointRecord:
    return EndpointRecord(
        id=sbox_id(node), network=net.id, node=node, name="", mac=mac, ipv4=address, created=now()
    )


def held_sbox(allocs: list[Allocation], node: str) -> IPv4Address | None:
    """The ingress address ``node`` holds already (from the cache's allocations of the ingress network)."""
    for a in allocs:
        if a.endpoint == sbox_id(node) and isinstance(a.address, IPv4Address):
            return a.address
    return None


async def take_sbox_address(
    ipam: ClusterIpam, keys: KeyLayout, net: OverlayNetwork, node: str, mac: str, allocs: list[Allocation]
) -> IPv4Interface:
    """This node's ingress address: the one it holds, or a new one, with its endpoint record in the same
    transaction (idempotent: a retry finds its own allocation)."""
    pool = net.pool(4)
    assert pool is not None
    plen = pool.subnet.prefixlen

    def record(addr: object) -> list[Put]:
        iface = IPv4Interface(f"{addr}/{plen}")
        return [Put(keys.endpoint(net.id, sbox_id(node)), encode(sbox_record(net, node, iface, mac)))]

    addr = await ipam.allocate_address(net, sbox_id(node), version=4, held=allocs, also=record, node=node)
    iface = IPv4Interface(f"{addr}/{plen}")
    log.info("ingress_address_taken", network=net.name, node=node, address=str(iface))
    return iface
