"""Service records in a real etcd: a VIP per network from the network's cluster IPAM, names unique, all or
nothing; the watch cache sees them; a network used by a service cannot be removed."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest
from clusterenv import KEYS, run, store, until
from etcdfix import EtcdCluster

from netd.cluster.cache import ClusterCache
from netd.cluster.ipam import ClusterIpam
from netd.cluster.networks import ClusterNetworks, NetworkDraft
from netd.cluster.records import Allocation, EndpointRecord, ServicePort, decode, encode
from netd.cluster.services import ClusterServices, ServiceDraft, vip_owner
from netd.core.errors import ConflictError, NotFoundError


def test_service_records(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        cache = ClusterCache(s, KEYS)
        cache.start()
        try:
            ipam = ClusterIpam(s, KEYS, "a")
            nets = ClusterNetworks(s, KEYS, ipam, "a")
            svcs = ClusterServices(s, KEYS, ipam, "a")
            one = await nets.create(NetworkDraft(id="n1", name="one", subnet="10.9.1.0/24"))
            two = await nets.create(NetworkDraft(id="n2", name="two", subnet="10.9.2.0/24"))
            port = ServicePort(protocol="tcp", target=80, published=8080)
            web = await svcs.create(ServiceDraft(id="s1", name="web", networks=[one, two], ports=[port]))
            # a VIP per network, the first free address after the gateway, held by the service on no node
            assert web.vips == {"n1": IPv4Address("10.9.1.2"), "n2": IPv4Address("10.9.2.2")}
            held = await s.get(KEYS.address("n1", IPv4Address("10.9.1.2")))
            assert held is not None
            alloc = decode(Allocation, held.value)
            assert (alloc.endpoint, alloc.node) == (vip_owner("s1"), "")
            assert await svcs.find("web") == web
            rr = await svcs.create(ServiceDraft(id="s2", name="rr", networks=[one], endpoint_mode="dnsrr"))
            assert rr.vips == {}
            # the watch cache of any node sees them, and the tasks by the service name on their records
            ep = EndpointRecord(
                id="e1",
                network="n1",
                node="b",
                mac="02:42:0a:09:01:03",
                ipv4=IPv4Interface("10.9.1.3/24"),
                service="web",
            )
            await s.put(KEYS.endpoint("n1", "e1"), encode(ep))
            assert await until(lambda: set(cache.services()) == {"web", "rr"} and len(cache.tasks("web")) == 1)
            # refused, nothing written: a name taken
            before = sorted(kv.key for kv in (await s.get_prefix(KEYS.root()))[0])
            with pytest.raises(ConflictError, match="already exists"):
                await svcs.create(ServiceDraft(id="s3", name="web", networks=[one]))
            # a network removed meanwhile: the VIPs taken before the failed transaction are given back
            gone = one.model_copy(update={"id": "n9"})
            with pytest.raises(NotFoundError):
                await svcs.create(ServiceDraft(id="s4", name="x", networks=[two, gone]))
            after = sorted(kv.key for kv in (await s.get_prefix(KEYS.root()))[0])
            assert after == before, set(after) ^ set(before)
            # a network a service uses is not removed
            with pytest.raises(ConflictError, match="used by service"):
                await nets.remove("two")
            await svcs.remove(web)
            await svcs.remove(rr)
            with pytest.raises(NotFoundError):
                await svcs.remove(web)
            assert await s.get(KEYS.address("n1", IPv4Address("10.9.1.2"))) is None  # the VIP went with it
            await s.delete(KEYS.endpoint("n1", "e1"))
            await nets.remove("two")
            assert await until(lambda: not cache.services())
        finally:
            await cache.stop()
            await s.close()

    run(body())
