"""Membership against a real etcd: the lease keeps a node alive, expiry removes it, a lost lease is taken
again, and node rm forgets a dead node's endpoints and addresses (but refuses a live node)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from ipaddress import IPv4Interface, ip_address, ip_network

import pytest
from clusterenv import KEYS, run, store, until
from etcdfix import EtcdCluster

from netd.cluster.ipam import ClusterIpam
from netd.cluster.membership import Membership
from netd.cluster.records import EndpointRecord, OverlayNetwork, encode
from netd.cluster.store import ClusterStore
from netd.core.errors import ConflictError, NotFoundError
from netd.core.ipam import validate_pool
from netd.core.model import IPNetwork


def member(s: ClusterStore, name: str, addr: str, ttl: int = 2, subnets: Iterable[IPNetwork] = ()) -> Membership:
    return Membership(
        s, KEYS, name=name, advertise_address=ip_address(addr), version="test", ttl=ttl, local_subnets=subnets
    )


async def alive(s: ClusterStore, name: str) -> bool:
    return await s.get(KEYS.alive(name)) is not None


async def gone(s: ClusterStore, name: str) -> bool:
    return not await alive(s, name)


def test_keepalive_keeps_a_node_and_expiry_removes_a_stopped_one(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        a = member(s, "a", "192.0.2.1", subnets=[ip_network("172.18.0.0/16")])
        b = member(s, "b", "192.0.2.2")
        try:
            await a.start()
            await b.start()
            lease_a = a.lease_id
            # three TTLs later both are still there, on their first lease: the refresh loop keeps them
            await asyncio.sleep(3 * a.ttl)
            assert await alive(s, "a") and await alive(s, "b")
            assert a.lease_id == lease_a and a.registrations == 1
            nodes = {n.name: n for n in await a.list_nodes()}
            assert nodes["a"].alive and nodes["b"].alive and nodes["a"].local_subnets == ["172.18.0.0/16"]
            # b stops without leaving (as in a crash): etcd drops its alive key after the TTL; its record stays
            await b.stop(leave=False)
            assert await alive(s, "b")
            assert await until(lambda: gone(s, "b"))
            nodes = {n.name: n for n in await a.list_nodes()}
            assert not nodes["b"].alive and nodes["b"].last_seen and nodes["b"].advertise_address == "192.0.2.2"
            assert nodes["a"].alive
            # a leaves cleanly: its key goes at once (lease revoked), no TTL to wait
            await a.stop()
            assert await gone(s, "a")
        finally:
            await a.stop()
            await b.stop()
            await s.close()

    run(body())


def test_a_live_name_is_not_taken_by_another_address(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        a = member(s, "a", "192.0.2.1", ttl=30)
        try:
            await a.start()
            with pytest.raises(ConflictError, match=r"node name 'a' is held by a live node at 192\.0\.2\.1"):
                await member(s, "a", "192.0.2.9").register()
            # the same node restarting within the TTL (same address) takes its name over
            again = member(s, "a", "192.0.2.1", ttl=30)
            await again.register()
            assert again.lease_id != a.lease_id and await alive(s, "a")
            await again.stop()
        finally:
            await a.stop(leave=False)
            await s.close()

    run(body())


def test_reregisters_after_etcd_lost_its_data(etcd: EtcdCluster) -> None:
    """etcd restarted empty (or the node was cut off longer than the TTL): the refresh finds the lease gone,
    the node registers again, and on_register lets the daemon publish its endpoints again."""

    async def body() -> None:
        s = store(etcd.endpoints)
        republished: list[int] = []

        async def on_register() -> None:
            republished.append(a.registrations)

        a = Membership(
            s,
            KEYS,
            name="a",
            advertise_address=ip_address("192.0.2.1"),
            version="t",
            ttl=2,
            on_register=on_register,
        )
        try:
            await a.start()
            first = a.lease_id
            etcd.kill(0)
            etcd.wipe(0)
            etcd.start(0)
            # the new etcd knew nothing: the node is back only because it registered again
            assert await until(lambda: republished == [2])
            assert await alive(s, "a")
            assert a.lease_id != first and a.registrations == 2
            assert await s.get(KEYS.node("a")) is not None
        finally:
            await a.stop()
            await s.close()

    run(body())


def test_keepalive_survives_an_etcd_restart_with_its_data(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints, timeout=1)
        a = member(s, "a", "192.0.2.1", ttl=4)
        try:
            await a.start()
            etcd.kill(0)
            await asyncio.sleep(1.5)  # a refresh or two fail meanwhile
            etcd.start(0)
            # etcd restores (and extends) its leases at start: the node is alive again on the same lease
            assert await until(lambda: alive(s, "a"))
            assert s.connected
            await asyncio.sleep(2 * a.ttl)
            assert await alive(s, "a")
        finally:
            await a.stop()
            await s.close()

    run(body())


def test_node_rm_frees_a_dead_nodes_addresses_and_refuses_a_live_node(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        a = member(s, "a", "192.0.2.1")
        b = member(s, "b", "192.0.2.2")
        try:
            await a.start()
            await b.start()
            net = OverlayNetwork(id="n1", name="net1", vni=4096, ipam=[validate_pool("10.0.9.0/24")])
            await s.put(KEYS.network(net.id), encode(net))
            ipam_a, ipam_b = ClusterIpam(s, KEYS, "a"), ClusterIpam(s, KEYS, "b")
            for node, ipam in (("a", ipam_a), ("b", ipam_b)):
                for i in range(3):
                    ep = f"{node}-ep{i}"
                    addr = await ipam.allocate_address(net, ep)
                    rec = EndpointRecord(
                        id=ep, network=net.id, node=node, mac="02:42:00:00:00:01", ipv4=IPv4Interface(f"{addr}/24")
                    )
                    await s.put(KEYS.endpoint(net.id, ep), encode(rec))
            held = (await s.get_prefix(KEYS.addresses_of(net.id)))[0]
            b_addrs = [k.key for k in held if b'"node":"b"' in k.value]
            assert len(b_addrs) == 3
            counts = {n.name: n.endpoints for n in await a.list_nodes()}
            assert counts == {"a": 3, "b": 3}
            with pytest.raises(ConflictError, match="node 'b' is alive"):
                await a.remove_node("b")
            assert len((await s.get_prefix(KEYS.addresses_of(net.id)))[0]) == 6  # nothing removed
            await b.stop(leave=False)
            assert await until(lambda: gone(s, "b"))
            assert await a.remove_node("b") == {"endpoints": 3, "addresses": 3}
            left = (await s.get_prefix(KEYS.addresses_of(net.id)))[0]
            assert len(left) == 3 and all(b'"node":"a"' in kv.value for kv in left)
            assert [e.key for e in (await s.get_prefix(KEYS.endpoints_of(net.id)))[0]] == [
                KEYS.endpoint(net.id, f"a-ep{i}") for i in range(3)
            ]
            assert [n.name for n in await a.list_nodes()] == ["a"]
            # b's addresses are free again
            freed = {k.rsplit("/", 1)[1] for k in b_addrs}
            got = {str(await ipam_a.allocate_address(net, f"new{i}")) for i in range(3)}
            assert got == freed
            with pytest.raises(NotFoundError, match="node 'b' is not known"):
                await a.remove_node("b")
        finally:
            await a.stop()
            await b.stop()
            await s.close()

    run(body())
