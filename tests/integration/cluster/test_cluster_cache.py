"""The watch-driven cache against a real etcd: it follows puts and deletes, keeps its view while etcd is down
(connected=False), and after etcd is back it resyncs and reports what changed meanwhile."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface, ip_address

from clusterenv import KEYS, run, store, until
from etcdfix import EtcdCluster

from netd.cluster.cache import Change, ClusterCache
from netd.cluster.records import EndpointRecord, NodeAlive, OverlayNetwork, encode
from netd.core.ipam import validate_pool


def net(net_id: str, vni: int) -> OverlayNetwork:
    return OverlayNetwork(id=net_id, name=f"net-{net_id}", vni=vni, ipam=[validate_pool(f"10.0.{vni % 256}.0/24")])


def ep(net_id: str, ep_id: str, node: str, last: int) -> EndpointRecord:
    return EndpointRecord(
        id=ep_id,
        network=net_id,
        node=node,
        mac=f"02:42:0a:00:00:{last:02x}",
        ipv4=IPv4Interface(f"10.0.0.{last}/24"),
    )


def test_cache_follows_puts_and_deletes(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s, writer = store(etcd.endpoints), store(etcd.endpoints)
        changes: list[Change] = []
        await writer.put(KEYS.network("n1"), encode(net("n1", 4096)))
        await writer.put("/unrelated/key", b"x")
        await writer.put(KEYS.node("bad"), b"not json")  # a bad value is skipped, not fatal
        cache = ClusterCache(s, KEYS, changes.append)
        cache.start()
        try:
            assert await cache.wait_for(lambda c: c.synced, 20)
            assert cache.connected and list(cache.networks()) == ["n1"] and changes[0].resync
            assert changes[0].networks() == {"n1"}
            await writer.put(KEYS.endpoint("n1", "e1"), encode(ep("n1", "e1", "a", 2)))
            alive = NodeAlive(name="a", lease=1, advertise_address=ip_address("192.0.2.1"))
            await writer.put(KEYS.alive("a"), encode(alive))
            assert await cache.wait_for(lambda c: len(c.endpoints("n1")) == 1 and "a" in c.alive(), 20)
            assert cache.endpoints("n1")[0].mac == "02:42:0a:00:00:02"
            await writer.delete(KEYS.alive("a"))
            assert await cache.wait_for(lambda c: "a" not in c.alive(), 20)
            last = changes[-1]
            assert list(last.deletes) == [KEYS.alive("a")] and last.nodes() == {"a"} and not last.resync
            assert isinstance(last.deletes[KEYS.alive("a")], NodeAlive)  # the record that went
            assert cache.endpoints("other") == [] and "/unrelated/key" not in cache.records
        finally:
            await cache.stop()
            await s.close()
            await writer.close()

    run(body())


def test_cache_keeps_its_view_while_etcd_is_down_and_resyncs_after(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s, writer = store(etcd.endpoints, timeout=1), store(etcd.endpoints, timeout=1)
        changes: list[Change] = []
        await writer.put(KEYS.network("n1"), encode(net("n1", 4096)))
        await writer.put(KEYS.endpoint("n1", "e1"), encode(ep("n1", "e1", "a", 2)))
        cache = ClusterCache(s, KEYS, changes.append, retry=0.2)
        cache.start()
        try:
            assert await cache.wait_for(lambda c: c.synced and len(c.endpoints()) == 1, 20)
            etcd.kill(0)
            assert await cache.wait_for(lambda c: not c.connected, 20)
            assert "cluster store unreachable" in cache.last_error
            assert len(cache.endpoints("n1")) == 1 and "n1" in cache.networks()  # the last view is kept
            etcd.start(0)
            # written after etcd is back but before the cache reconnected, or after: either way it is seen
            await writer.put(KEYS.endpoint("n1", "e2"), encode(ep("n1", "e2", "b", 3)))
            await writer.delete(KEYS.endpoint("n1", "e1"))
            assert await cache.wait_for(lambda c: c.connected and [e.id for e in c.endpoints("n1")] == ["e2"], 30)
            assert cache.resyncs >= 2
        finally:
            await cache.stop()
            await s.close()
            await writer.close()

    run(body())


def test_cache_resync_reports_what_changed_while_its_member_was_down(etcd3: EtcdCluster) -> None:
    """The cache talks only to member 0; while that member is down the others take writes.  When it is back,
    the resync reports exactly those changes (a new endpoint, a deleted network), and nothing else."""

    async def body() -> None:
        s = store(etcd3.endpoints[:1], timeout=1)
        writer = store(etcd3.endpoints[1:], timeout=5)
        changes: list[Change] = []
        for i in (1, 2):
            await writer.put(KEYS.network(f"n{i}"), encode(net(f"n{i}", 4095 + i)))
        await writer.put(KEYS.endpoint("n1", "e1"), encode(ep("n1", "e1", "a", 2)))
        cache = ClusterCache(s, KEYS, changes.append, retry=0.2)
        cache.start()
        try:
            assert await cache.wait_for(lambda c: c.synced and len(c.networks()) == 2, 20)
            etcd3.kill(0)
            assert await cache.wait_for(lambda c: not c.connected, 20)
            await writer.put(KEYS.endpoint("n1", "e2"), encode(ep("n1", "e2", "b", 3)))
            await writer.delete(KEYS.network("n2"))
            assert "n2" in cache.networks()  # nothing seen while cut off
            before = len(changes)
            etcd3.start(0)
            assert await cache.wait_for(lambda c: c.connected and "n2" not in c.networks(), 30)
            assert await until(lambda: len(cache.endpoints("n1")) == 2)
            resync = [c for c in changes[before:] if c.resync]
            assert resync, changes[before:]
            seen_puts = {k for c in changes[before:] for k in c.puts}
            seen_deletes = {k for c in changes[before:] for k in c.deletes}
            assert seen_puts == {KEYS.endpoint("n1", "e2")} and seen_deletes == {KEYS.network("n2")}
        finally:
            await cache.stop()
            await s.close()
            await writer.close()

    run(body())


def test_three_members_one_killed_nothing_notices(etcd3: EtcdCluster) -> None:
    """A node's cache and membership over all three members: killing one (maybe the leader) changes nothing
    visible: the node stays alive on its lease and new keys keep arriving in the cache."""
    from netd.cluster.membership import Membership

    async def body() -> None:
        s = store(etcd3.endpoints, timeout=5)
        writer = store(etcd3.endpoints[::-1], timeout=5)
        node = Membership(s, KEYS, name="a", advertise_address=ip_address("192.0.2.1"), version="t", ttl=2)
        cache = ClusterCache(s, KEYS)
        await node.start()
        cache.start()
        try:
            assert await cache.wait_for(lambda c: "a" in c.alive(), 20)
            etcd3.kill(0)
            await writer.put(KEYS.network("n1"), encode(net("n1", 4096)))
            assert await cache.wait_for(lambda c: "n1" in c.networks(), 30)
            for i in range(3):  # three TTLs: the lease is kept alive through the remaining members
                await writer.put(KEYS.endpoint("n1", f"e{i}"), encode(ep("n1", f"e{i}", "a", i + 2)))
                await asyncio.sleep(node.ttl)
            assert await cache.wait_for(lambda c: len(c.endpoints("n1")) == 3, 30)
            assert node.registrations == 1 and "a" in cache.alive()
        finally:
            await cache.stop()
            await node.stop()
            await s.close()
            await writer.close()

    run(body())
