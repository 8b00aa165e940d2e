"""The etcd wrapper against a real etcd: reads, writes, transactions, leases, watches, and etcd going away."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from clusterenv import run, store
from etcdfix import EtcdCluster, etcd_cluster

from netd.cluster.errors import ClusterUnavailableError
from netd.cluster.store import ClusterStore, WatchCompactedError, WatchEvent
from netd.cluster.txn import empty_prefix, unchanged_since
from netd.core.errors import NetdError


def test_get_put_delete_and_prefix(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        try:
            assert await s.get("/t/a") is None
            await s.put("/t/a", b"1")
            await s.put("/t/b/c", b"2")
            await s.put("/u", b"3")
            kv = await s.get("/t/a")
            assert kv is not None and kv.value == b"1" and kv.version == 1
            kvs, rev = await s.get_prefix("/t/")
            assert [(k.key, k.value) for k in kvs] == [("/t/a", b"1"), ("/t/b/c", b"2")]
            assert rev >= kv.mod_revision
            assert await s.delete("/t/a") and not await s.delete("/t/a")
            assert await s.delete_prefix("/t/") == 1
            assert (await s.get_prefix("/t/"))[0] == []
        finally:
            await s.close()

    run(body())


def test_create_if_absent_and_compare_and_swap(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        try:
            first = await s.create("/t/k", b"mine")
            assert first.succeeded
            second = await s.create("/t/k", b"theirs")
            assert not second.succeeded
            assert second.gets[0] is not None and second.gets[0].value == b"mine"  # the holder is reported
            kv = await s.get("/t/k")
            assert kv is not None
            assert await s.compare_and_swap("/t/k", b"v2", kv.mod_revision)
            assert not await s.compare_and_swap("/t/k", b"v3", kv.mod_revision)  # changed meanwhile
            assert (await s.get("/t/k")).value == b"v2"  # type: ignore[union-attr]
            assert await s.compare_and_swap("/t/new", b"x", 0) and not await s.compare_and_swap("/t/new", b"y", 0)
            # range compares: "nothing under a prefix" and "nothing changed under a prefix since"
            ok = await s.txn("t", [empty_prefix("/t/none/")], [])
            assert ok.succeeded
            assert not (await s.txn("t", [empty_prefix("/t/")], [])).succeeded
            _, rev = await s.get_prefix("/t/")
            assert (await s.txn("t", [unchanged_since("/t/", rev)], [])).succeeded
            await s.put("/t/other", b"1")
            assert not (await s.txn("t", [unchanged_since("/t/", rev)], [])).succeeded
        finally:
            await s.close()

    run(body())


def test_lease_keeps_and_drops_its_keys(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        try:
            lease = await s.grant_lease(5)
            await s.put("/t/leased", b"x", lease=lease)
            assert await s.refresh_lease(lease) == 5
            assert (await s.get("/t/leased")).lease == lease  # type: ignore[union-attr]
            await s.revoke_lease(lease)
            assert await s.get("/t/leased") is None
            assert await s.refresh_lease(lease) == 0  # a lost lease answers TTL 0
        finally:
            await s.close()

    run(body())


def test_watch_sees_puts_and_deletes_from_a_revision(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints)
        try:
            await s.put("/t/before", b"0")
            _, rev = await s.get_prefix("/t/")
            seen: list[WatchEvent] = []

            async def watch() -> None:
                async for ev in s.watch("/t/", rev + 1):
                    seen.append(ev)
                    if ev.kind == "delete":
                        return

            task = asyncio.create_task(watch())
            await s.put("/t/a", b"1")
            await s.put("/elsewhere", b"-")
            await s.delete("/t/before")
            await asyncio.wait_for(task, 10)
            got = [(e.kind, e.key, e.value) for e in seen]
            assert got == [("put", "/t/a", b"1"), ("delete", "/t/before", b"")]
            assert seen[0].revision < seen[1].revision
        finally:
            await s.close()

    run(body())


def test_etcd_down_gives_one_clear_error_in_bounded_time(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints, timeout=1.5)
        try:
            await s.put("/t/a", b"1")
            etcd.kill(0)
            calls = [
                s.get("/t/a"),
                s.put("/t/b", b"2"),
                s.create("/t/c", b"3"),
                s.grant_lease(5),
                s.get_prefix("/t/"),
            ]
            for call in calls:
                # the store's own deadline ends the call; the outer wait only guards the test against a hang
                with pytest.raises(ClusterUnavailableError) as e:
                    await asyncio.wait_for(call, 30)
                assert isinstance(e.value, NetdError) and e.value.code == "cluster_unavailable"
                assert e.value.message.startswith("cluster store unreachable: ")
                assert etcd.endpoints[0] in e.value.message and "check that etcd is running" in e.value.message
            assert not s.connected
            with pytest.raises(ClusterUnavailableError):  # a watch cannot start either
                await asyncio.wait_for(anext(aiter(s.watch("/t/", 1))), 30)
            etcd.start(0)
            assert (await s.get("/t/a")).value == b"1"  # type: ignore[union-attr]  # back without a new store
            assert s.connected
        finally:
            await s.close()

    run(body())


def test_unreachable_address_is_refused_in_bounded_time() -> None:
    """Nothing listens there at all (as with a wrong etcd_endpoints at start)."""

    async def body() -> None:
        s = ClusterStore(["http://127.0.0.1:9"], timeout=1)
        try:
            with pytest.raises(ClusterUnavailableError, match=r"cluster store unreachable: .*127\.0\.0\.1:9"):
                await asyncio.wait_for(s.get("/x"), 30)
        finally:
            await s.close()

    run(body())


def test_three_members_one_killed_operations_continue(etcd3: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd3.endpoints, timeout=5)
        try:
            await s.put("/t/a", b"1")
            lease = await s.grant_lease(10)
            seen: list[WatchEvent] = []

            async def watch() -> None:
                async for ev in s.watch("/t/", 1, reconnect=True):
                    seen.append(ev)

            task = asyncio.create_task(watch())
            etcd3.kill(0)  # the member the store talks to first (and possibly the leader)
            await s.put("/t/b", b"2")
            assert (await s.get("/t/a")).value == b"1"  # type: ignore[union-attr]
            assert (await s.create("/t/c", b"3")).succeeded
            assert await s.refresh_lease(lease) > 0
            assert [kv.key for kv in (await s.get_prefix("/t/"))[0]] == ["/t/a", "/t/b", "/t/c"]
            deadline = asyncio.get_running_loop().time() + 20
            while {e.key for e in seen} != {"/t/a", "/t/b", "/t/c"}:
                assert asyncio.get_running_loop().time() < deadline, seen
                await asyncio.sleep(0.05)
            task.cancel()
        finally:
            await s.close()

    run(body())


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    """aetcd 1.0.0 opens only plain channels: netd's own TLS channel talks to an etcd that requires client
    certificates, and without the client certificate the same etcd is refused with the clear error."""
    with etcd_cluster(tmp_path, 1, tls=True) as etcd:
        tls = etcd.tls
        assert tls is not None and etcd.endpoints[0].startswith("https://")

        async def body() -> None:
            good = ClusterStore(etcd.endpoints, cacert=tls["ca"], cert=tls["cert"], key=tls["key"], timeout=3)
            no_cert = ClusterStore(etcd.endpoints, cacert=tls["ca"], timeout=1.5)
            plain = ClusterStore([etcd.endpoints[0].replace("https", "http")], timeout=1.5)
            try:
                await good.put("/t/a", b"1")
                assert (await good.get("/t/a")).value == b"1"  # type: ignore[union-attr]
                for bad in (no_cert, plain):
                    with pytest.raises(ClusterUnavailableError, match="cluster store unreachable"):
                        await asyncio.wait_for(bad.get("/t/a"), 30)
            finally:
                for s in (good, no_cert, plain):
                    await s.close()

        run(body())


def test_watch_reconnect_resumes_after_an_etcd_restart_and_reports_compaction(etcd: EtcdCluster) -> None:
    async def body() -> None:
        s = store(etcd.endpoints, timeout=1)
        try:
            await s.put("/t/a", b"1")
            seen: list[WatchEvent] = []

            async def watch() -> None:
                async for ev in s.watch("/t/", 1, reconnect=True):
                    seen.append(ev)

            task = asyncio.create_task(watch())
            while len(seen) < 1:
                await asyncio.sleep(0.05)
            etcd.kill(0)
            await asyncio.sleep(0.5)  # the stream breaks; the watch keeps trying
            etcd.start(0)
            await s.put("/t/b", b"2")
            await s.delete("/t/a")
            for _ in range(400):
                if len(seen) >= 3:
                    break
                await asyncio.sleep(0.05)
            # resumed from the next revision: no event twice, none lost
            assert [(e.kind, e.key) for e in seen] == [("put", "/t/a"), ("put", "/t/b"), ("delete", "/t/a")]
            task.cancel()
            # history before a compaction is gone: the watch says so (the caller lists again)
            _, rev = await s.get_prefix("/t/")
            await s.call("compact", lambda c: c.compact(rev))
            with pytest.raises(WatchCompactedError):
                await asyncio.wait_for(anext(aiter(s.watch("/t/", 1, reconnect=True))), 30)
        finally:
            await s.close()

    run(body())
