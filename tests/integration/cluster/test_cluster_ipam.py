"""Cluster-wide IPAM against a real etcd: concurrent allocations from several clients never hand out an
address, a VNI or a subnet twice."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Network, ip_address, ip_network
from typing import Any

import pytest
from clusterenv import KEYS, run, store
from etcdfix import EtcdCluster

from netd.cluster.ipam import ClusterIpam
from netd.cluster.records import NodeRecord, OverlayNetwork, encode
from netd.cluster.store import ClusterStore
from netd.core.errors import ConflictError, InvalidError, NotFoundError
from netd.core.ipam import validate_pool


async def make_network(
    s: ClusterStore, net_id: str = "n1", subnet: str = "10.0.9.0/24", **pool: Any
) -> OverlayNetwork:
    net = OverlayNetwork(id=net_id, name=f"net-{net_id}", vni=4096, ipam=[validate_pool(subnet, **pool)])
    await s.put(KEYS.network(net_id), encode(net))
    return net


def test_sixty_concurrent_allocations_from_three_clients_are_unique(etcd: EtcdCluster) -> None:
    async def body() -> None:
        stores = [store(etcd.endpoints, timeout=10) for _ in range(3)]
        try:
            net = await make_network(
                stores[0], subnet="10.0.9.0/26", gateway="10.0.9.1", aux_addresses={"router": "10.0.9.2"}
            )
            ipams = [ClusterIpam(s, KEYS, f"node{i}") for i, s in enumerate(stores)]
            got = await asyncio.gather(*(ipams[i % 3].allocate_address(net, f"ep{i}") for i in range(60)))
            assert len(set(got)) == 60, sorted(got)
            assert ip_address("10.0.9.1") not in got and ip_address("10.0.9.2") not in got  # gateway, aux
            assert all(a in net.ipam[0].subnet for a in got)
            held, _ = await stores[0].get_prefix(KEYS.addresses_of(net.id))
            assert len(held) == 60
            # the /26 had exactly 60 usable addresses (64 - network, broadcast, gateway, aux): now a clear error
            with pytest.raises(ConflictError, match="no free address left"):
                await ipams[1].allocate_address(net, "ep60")
        finally:
            for s in stores:
                await s.close()

    run(body())


def test_requested_address_retry_and_release(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        try:
            net = await make_network(s, ip_range="10.0.9.128/25")
            a, b = ClusterIpam(s, KEYS, "node-a"), ClusterIpam(s, KEYS, "node-b")
            assert await a.allocate_address(net, "ep1") == ip_address("10.0.9.128")  # the ip-range's first
            assert await a.allocate_address(net, "ep1") == ip_address("10.0.9.128")  # a retry: the same one
            assert await a.allocate_address(net, "ep2", ip_address("10.0.9.50")) == ip_address("10.0.9.50")
            with pytest.raises(ConflictError, match=r"10\.0\.9\.50 is already in use \(endpoint on node node-a\)"):
                await b.allocate_address(net, "ep3", ip_address("10.0.9.50"))
            with pytest.raises(ConflictError, match="reserved"):
                await b.allocate_address(net, "ep3", ip_address("10.0.9.1"))
            with pytest.raises(InvalidError, match="outside subnet"):
                await b.allocate_address(net, "ep3", ip_address("10.0.10.5"))
            with pytest.raises(InvalidError, match="no IPv6 subnet"):
                await b.allocate_address(net, "ep3", version=6)
            assert not await b.release_address(net.id, ip_address("10.0.9.50"), "ep3")  # not its holder
            assert await a.release_address(net.id, ip_address("10.0.9.50"), "ep2")
            assert await b.allocate_address(net, "ep3", ip_address("10.0.9.50")) == ip_address("10.0.9.50")
            await s.delete(KEYS.network(net.id))
            with pytest.raises(NotFoundError, match="was removed"):
                await b.allocate_address(net, "ep4")
        finally:
            await s.close()

    run(body())


def test_vnis_are_unique(etcd: EtcdCluster) -> None:
    async def body() -> None:
        stores = [store(etcd.endpoints, timeout=10) for _ in range(3)]
        try:
            ipams = [ClusterIpam(s, KEYS, f"node{i}") for i, s in enumerate(stores)]
            got = await asyncio.gather(*(ipams[i % 3].allocate_vni(f"net{i}") for i in range(12)))
            assert len(set(got)) == 12 and min(got) >= 4096, got
            assert await ipams[0].allocate_vni("net0") == got[0]  # a retry of the same network
            assert await ipams[0].allocate_vni("mine", 4097 if 4097 not in got else 5000) in (4097, 5000)
            with pytest.raises(ConflictError, match=f"VNI {got[1]} is already used by overlay network net1"):
                await ipams[2].allocate_vni("other", got[1])
            for bad in (0, 1 << 24):
                with pytest.raises(InvalidError, match="out of range"):
                    await ipams[2].allocate_vni("other", bad)
            assert not await ipams[2].release_vni(got[1], "other")
            assert await ipams[1].release_vni(got[1], "net1")
            assert await ipams[2].allocate_vni("other", got[1]) == got[1]
        finally:
            for s in stores:
                await s.close()

    run(body())


def test_subnets_are_unique_and_clear_of_local_networks(etcd: EtcdCluster) -> None:
    async def body() -> None:
        stores = [store(etcd.endpoints, timeout=10) for _ in range(3)]
        try:
            # node1 uses 10.0.0.0/23 locally: automatic overlay subnets must not take it
            rec = NodeRecord(
                name="node1", advertise_address=ip_address("192.0.2.1"), local_subnets=[ip_network("10.0.0.0/23")]
            )
            await stores[0].put(KEYS.node("node1"), encode(rec))
            ipams = [ClusterIpam(s, KEYS, f"node{i}") for i, s in enumerate(stores)]
            pools = [(IPv4Network("10.0.0.0/16"), 24)]
            got = await asyncio.gather(*(ipams[i % 3].allocate_subnet(f"net{i}", pools=pools) for i in range(15)))
            assert len(set(got)) == 15
            assert not any(a.overlaps(b) for i, a in enumerate(got) for b in got[i + 1 :])
            assert not any(g.overlaps(ip_network("10.0.0.0/23")) for g in got)
            assert ip_network("10.0.2.0/24") in got  # the first subnet after node1's
            with pytest.raises(ConflictError, match=r"overlaps overlay network net\d+ \(10\.0\.\d+\.0/24\)"):
                await ipams[0].allocate_subnet("big", ip_network("10.0.0.0/16"))
            with pytest.raises(ConflictError, match=r"overlaps a local network of node node1 \(10\.0\.0\.0/23\)"):
                await ipams[0].allocate_subnet("mine", ip_network("10.0.1.0/24"))
            assert await ipams[0].allocate_subnet("v6", ip_network("fd00:1::/64")) == ip_network("fd00:1::/64")
            assert await ipams[1].release_subnet(got[0], "net0")
            assert await ipams[2].allocate_subnet("again", got[0]) == got[0]
        finally:
            for s in stores:
                await s.close()

    run(body())


def test_allocation_from_a_stale_cache_view_still_never_duplicates(etcd: EtcdCluster) -> None:
    """The caller passes the allocations its cache knows; when the cache is behind, etcd's transaction still
    decides and the next candidate is taken."""

    async def body() -> None:
        s = store(etcd.endpoints)
        try:
            net = await make_network(s)
            a, b = ClusterIpam(s, KEYS, "a"), ClusterIpam(s, KEYS, "b")
            first = await a.allocate_address(net, "ep1", held=[])
            second = await b.allocate_address(net, "ep2", held=[])  # b's (empty) view missed ep1's address
            assert first == ip_address("10.0.9.2") and second == ip_address("10.0.9.3")
        finally:
            await s.close()

    run(body())
