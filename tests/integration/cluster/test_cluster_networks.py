"""Overlay network definitions in a real etcd, and the ClusterNode the daemon will use."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface, ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from clusterenv import KEYS, run, store
from etcdfix import EtcdCluster

from netd.cluster.errors import ClusterUnavailableError
from netd.cluster.ipam import ClusterIpam
from netd.cluster.networks import ClusterNetworks, NetworkDraft
from netd.cluster.records import EndpointRecord, encode
from netd.core.config import load_settings
from netd.core.errors import ConflictError, InvalidError, NotFoundError


def test_create_and_remove_overlay_networks(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        try:
            nets = ClusterNetworks(s, KEYS, ClusterIpam(s, KEYS, "a"), "a")
            one = await nets.create(NetworkDraft(id="id1", name="one", attachable=True))
            pool = one.ipam[0]
            assert (one.vni, str(pool.subnet), str(pool.gateway)) == (4096, "10.0.0.0/24", "10.0.0.1")
            two = await nets.create(
                NetworkDraft(
                    id="id2",
                    name="two",
                    vni=4097,
                    subnet="10.0.9.0/24",
                    gateway="10.0.9.254",
                    subnet6="fd00:9::/64",
                )
            )
            assert two.vni == 4097 and two.enable_ipv6 and str(two.ipam[1].subnet) == "fd00:9::/64"
            assert (await nets.find("two")) == two
            before = sorted(kv.key for kv in (await s.get_prefix(KEYS.root()))[0])
            bad: list[tuple[dict[str, Any], type[Exception], str]] = [
                ({"name": "one"}, ConflictError, "already exists"),
                ({"vni": 4097}, ConflictError, "VNI 4097 is already used"),
                ({"vni": 1 << 24}, InvalidError, "out of range"),
                ({"subnet": "10.0.9.128/25"}, ConflictError, "overlaps overlay network"),
                ({"subnet6": "fd00:9::/80"}, ConflictError, "overlaps"),
                ({"gateway": "10.0.7.1"}, InvalidError, "need --subnet"),
                ({"subnet": "10.0.7.0/24", "gateway": "10.0.8.1"}, InvalidError, "outside"),
            ]
            for fields, err, text in bad:
                draft = NetworkDraft(**{"id": "x", "name": "x", **fields})
                with pytest.raises(err, match=text):
                    await nets.create(draft)
                after = sorted(kv.key for kv in (await s.get_prefix(KEYS.root()))[0])
                assert after == before, f"{draft} left {set(after) ^ set(before)}"  # nothing half-created
            # refused while a node has an endpoint on it; then everything of the network goes
            ep = EndpointRecord(
                id="e1", network="id1", node="b", mac="02:42:0a:00:00:02", ipv4=IPv4Interface("10.0.0.2/24")
            )
            await s.put(KEYS.endpoint("id1", "e1"), encode(ep))
            with pytest.raises(ConflictError, match=r"1 endpoint\(s\) on node\(s\) b; disconnect them first"):
                await nets.remove("one")
            assert await nets.find("one") is not None
            await s.delete(KEYS.endpoint("id1", "e1"))
            await nets.remove("one")
            await nets.remove("two")
            assert (await s.get_prefix(KEYS.root()))[0] == []
            with pytest.raises(NotFoundError):
                await nets.remove("one")
        finally:
            await s.close()

    run(body())


def test_concurrent_creates_of_one_name_make_one_network(etcd: EtcdCluster) -> None:
    async def body() -> None:
        stores = [store(etcd.endpoints, timeout=10) for _ in range(3)]
        try:
            nets = [ClusterNetworks(s, KEYS, ClusterIpam(s, KEYS, f"n{i}"), f"n{i}") for i, s in enumerate(stores)]
            got = await asyncio.gather(
                *(nets[i].create(NetworkDraft(id=f"id{i}", name="same")) for i in range(3)), return_exceptions=True
            )
            made = [g for g in got if not isinstance(g, BaseException)]
            assert len(made) == 1 and all(isinstance(g, ConflictError) for g in got if g not in made), got
            keys = {kv.key for kv in (await stores[0].get_prefix(KEYS.root()))[0]}
            assert len([k for k in keys if "/vnis/" in k]) == 1 and len([k for k in keys if "/subnets/" in k]) == 1
        finally:
            for s in stores:
                await s.close()

    run(body())


def _cfg(tmp_path: Path, endpoints: list[str], **extra: str) -> object:
    lines = [
        f"etcd_endpoints = {endpoints!r}".replace("'", '"'),
        'node_name = "a"',
        "lease_ttl = 2",
        'key_prefix = "/netd-node-test/v1"',
        *(f'{k} = "{v}"' for k, v in extra.items()),
    ]
    (tmp_path / "netd.toml").write_text("[cluster]\n" + "\n".join(lines) + "\n")
    return load_settings(tmp_path / "netd.toml").cluster


def test_cluster_node_from_config(etcd: EtcdCluster, tmp_path: Path) -> None:
    from netd.cluster.node import ClusterNode

    async def body() -> None:
        cfg = _cfg(tmp_path, etcd.endpoints, advertise_address="192.0.2.1", request_timeout="1")
        node = ClusterNode(cfg, version="t", local_subnets=[ip_network("172.17.0.0/16")])  # type: ignore[arg-type]
        await node.start()
        try:
            assert await node.cache.wait_for(lambda c: "a" in c.alive(), 20)
            st = node.status()
            assert st["connected"] and st["registered"] and st["nodes_alive"] == 1 and st["address"] == "192.0.2.1"
            net = await node.networks.create(NetworkDraft(id="id1", name="one"), node.pools)
            assert await node.cache.wait_for(lambda c: "id1" in c.networks(), 20)
            assert await node.ipam.allocate_address(net, "e1") == ip_address("10.0.0.2")
            assert await node.cache.wait_for(lambda c: len(c.allocations("id1")) == 1, 20)
            held = node.cache.allocations("id1")
            assert await node.ipam.allocate_address(net, "e2", held=held) == ip_address("10.0.0.3")
        finally:
            await node.stop(leave=True)

    run(body())


def test_cluster_node_refuses_to_start_without_etcd_or_address(tmp_path: Path) -> None:
    from netd.cluster.node import ClusterNode

    async def body() -> None:
        cfg = _cfg(tmp_path, ["http://127.0.0.1:9"], advertise_address="192.0.2.1", request_timeout="1")
        node = ClusterNode(cfg, version="t")  # type: ignore[arg-type]
        with pytest.raises(ClusterUnavailableError, match="cluster store unreachable"):
            await asyncio.wait_for(node.start(), 30)
        with pytest.raises(InvalidError, match="advertise_address is not set"):
            ClusterNode(_cfg(tmp_path, ["http://127.0.0.1:9"]), version="t")  # type: ignore[arg-type]

    run(body())
