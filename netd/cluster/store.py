"""The etcd client wrapper: the only module that imports aetcd/grpc.

- Several endpoints: calls go to the current one; a failure moves to the next one and retries, with a short
  backoff, until the request timeout (``[cluster] request_timeout``) is spent.  So a dead member of a
  three-member cluster costs one failed attempt, and an election (``no leader``) is waited out.
- Every request carries etcd's "require leader" metadata: a member cut off from the quorum answers
  ``no leader`` at once (and cancels its watches) instead of serving stale data or hanging.
- Every failure of etcd itself (refused, timeout, no leader, TLS) becomes one :class:`ClusterUnavailableError`
  whose message starts "cluster store unreachable: " and says what to check.  No call outlives the timeout.
- aetcd 1.0.0 opens only plain-text channels; :class:`_Client` opens a TLS channel when configured.
- gRPC runs its own threads: a fork that does not exec (pyroute2's ``netns=`` sockets) segfaulted the child in
  2 of 3 runs while a watch was active.  netd's kernel layer opens namespace sockets fork-free (setns in a
  thread); fork+exec (subprocess) is safe (200 of 200 during gRPC traffic).
- Retried writes: a request that timed out may still have been applied.  Puts and deletes are idempotent;
  create-if-absent returns the existing value so the caller can recognise its own earlier write (allocations
  carry their endpoint id); compare-and-swap reports "changed", and the caller re-reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

# gRPC's C core logs TLS and connection failures straight to stderr, unstructured; netd reports them itself (in
# ClusterUnavailableError and structlog events).  GRPC_VERBOSITY=ERROR in the environment brings them back.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import aetcd
import grpc
import structlog
from aetcd import rpc, watcher

from netd.cluster.errors import ClusterRefusedError, ClusterUnavailableError, LeaseLostError
from netd.cluster.txn import KV, Cmp, Delete, Get, Put, TxnResult, absent, mod_is, to_compare, to_op

if TYPE_CHECKING:
    from netd.core.config import Cluster

log = structlog.get_logger("netd.cluster")

T = TypeVar("T")

REQUIRE_LEADER = (("hasleader", "true"),)
CHANNEL_OPTIONS = {
    # reconnect quickly once etcd is back (gRPC's default backoff grows to 120 s)
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # notice a silently dead connection (etcd's server refuses pings more often than every 5 s)
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.max_receive_message_length": 64 << 20,
}
# errors that say "this member cannot serve now": try another member / try again
_TRANSIENT = (
    aetcd.ConnectionFailedError,
    aetcd.ConnectionTimeoutError,
    aetcd.InternalError,
    aetcd.WatchTimeoutError,
    grpc.aio.AioRpcError,
    asyncio.TimeoutError,
    ConnectionError,
)
_TRANSIENT_TEXT = re.compile(r"no leader|timed out|leader changed|too many requests|unavailable|not capable")
_URL = re.compile(r"^(https?)://(\[[^]]+\]|[^:/]+):(\d+)/?$")


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: str
    value: bytes  # empty for a delete
    revision: int  # the revision of the change


class WatchCompactedError(Exception):
    """The start revision is older than etcd's compacted history: list again and watch from the new revision."""


def _b(text: str) -> bytes:
    return text.encode()


def _kv(raw: Any) -> KV:
    return KV(raw.key.decode(), bytes(raw.value), raw.mod_revision, raw.create_revision, raw.version, raw.lease)


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int
    tls: bool


def parse_endpoint(url: str) -> Endpoint:
    m = _URL.match(url)
    if m is None:
        raise ValueError(f'"{url}" is not an etcd client URL (e.g. "http://192.0.2.100:2379")')
    return Endpoint(url, m.group(2), int(m.group(3)), m.group(1) == "https")


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client on a channel netd opens: TLS when configured, and the require-leader metadata."""

    def __init__(self, ep: Endpoint, credentials: grpc.ChannelCredentials | None, timeout: float) -> None:
        super().__init__(host=ep.host, port=ep.port, timeout=timeout, options=CHANNEL_OPTIONS)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        target = f"{self._host}:{self._port}"
        options = list(self._options.items())
        if self._credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self.channel = grpc.aio.secure_channel(target, self._credentials, options=options)
        self.metadata = REQUIRE_LEADER
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata)
        self._connected.set()


class ClusterStore:
    """Key-value access to the etcd cluster, with failover and bounded time (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        cacert: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [parse_endpoint(u) for u in endpoints]
        self.timeout = timeout
        self._credentials: grpc.ChannelCredentials | None = None
        if cacert or cert or any(ep.tls for ep in self.endpoints):
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=cacert.read_bytes() if cacert else None,
                private_key=key.read_bytes() if key else None,
                certificate_chain=cert.read_bytes() if cert else None,
            )
        self._clients: dict[int, _Client] = {}
        self._current = 0
        self.connected = False  # the last call reached etcd

    @classmethod
    def from_config(cls, cfg: Cluster) -> ClusterStore:
        return cls(
            cfg.etcd_endpoints,
            cacert=cfg.etcd_cacert,
            cert=cfg.etcd_cert,
            key=cfg.etcd_key,
            timeout=cfg.request_timeout,
        )

    def _client(self, index: int) -> _Client:
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = _Client(self.endpoints[index], self._credentials, self.timeout)
        return client

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            try:
                await asyncio.wait_for(client.close(), 2)
            except Exception as e:  # closing a channel to a dead member must not fail a shutdown
                log.debug("etcd_close_failed", error=str(e))

    def unavailable(self, what: str, error: BaseException | str) -> ClusterUnavailableError:
        urls = ", ".join(ep.url for ep in self.endpoints)
        reason = (str(error) or type(error).__name__) if isinstance(error, BaseException) else error
        if isinstance(error, asyncio.TimeoutError | aetcd.ConnectionTimeoutError):
            reason = f"no answer ({type(error).__name__})"
        return ClusterUnavailableError(
            f"cluster store unreachable: {what} failed within {self.timeout:g} s on etcd {urls}: {reason}; check "
            "that etcd is running and reachable from this node and that [cluster] etcd_endpoints and the TLS "
            "files (etcd_cacert, etcd_cert, etcd_key) are right; existing endpoints keep working meanwhile"
        )

    async def call(self, what: str, op: Callable[[_Client], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``op`` on the current endpoint; fail over and retry until ``timeout`` (default: the store's)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.timeout)
        backoff = 0.05
        tried = 0
        while True:
            index = self._current
            remaining = deadline - loop.time()
            # one attempt may not eat the whole budget while other members are left to try
            share = remaining if tried + 1 >= len(self.endpoints) else max(remaining / 2, 0.3)
            try:
                result = await asyncio.wait_for(op(self._client(index)), max(min(share, remaining), 0.05))
                self.connected = True
                return result
            except aetcd.ClientError as e:
                if "lease not found" in str(e):
                    raise LeaseLostError(f"etcd lease lost: {e}") from e
                if not isinstance(e, _TRANSIENT) and not _TRANSIENT_TEXT.search(str(e).lower()):
                    raise ClusterRefusedError(
                        f"cluster store refused {what}: {e}; check etcd's permissions for this node (etcd "
                        "user/role, client certificate) and its limits (--max-txn-ops, --max-request-bytes)"
                    ) from e
                error: BaseException = e
            except _TRANSIENT as e:
                error = e
            tried += 1
            self._current = (index + 1) % len(self.endpoints)
            log.debug("etcd_attempt_failed", what=what, endpoint=self.endpoints[index].url, error=str(error))
            if loop.time() + backoff >= deadline:
                self.connected = False
                raise self.unavailable(what, error) from error
            if tried % len(self.endpoints) == 0:  # every member failed once: wait a little before the next round
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)

    # reads
    async def get(self, key: str) -> KV | None:
        got = await self.call(f"get {key}", lambda c: c.get(_b(key)))
        return _kv(got) if got is not None else None

    async def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under ``prefix`` (sorted) and the revision of the read (watch from revision + 1)."""
        got = await self.call(f"list {prefix}", lambda c: c.get_prefix(_b(prefix), sort_order="ascend"))
        return [_kv(raw) for raw in got.kvs], int(got.header.revision)

    # writes
    async def put(self, key: str, value: bytes, lease: int = 0) -> None:
        await self.call(f"put {key}", lambda c: c.put(_b(key), value, lease=lease or None))

    async def delete(self, key: str) -> bool:
        got = await self.call(f"delete {key}", lambda c: c.delete(_b(key)))
        return got is not None

    async def delete_prefix(self, prefix: str) -> int:
        got = await self.call(f"delete {prefix}", lambda c: c.delete_prefix(_b(prefix)))
        return int(got.deleted)

    async def txn(
        self,
        what: str,
        compares: Sequence[Cmp],
        success: Sequence[Put | Delete | Get],
        failure: Sequence[Put | Delete | Get] = (),
    ) -> TxnResult:
        async def run(c: _Client) -> tuple[bool, list[Any]]:
            ok, responses = await c.transaction(
                [to_compare(x) for x in compares], [to_op(o) for o in success], [to_op(o) for o in failure]
            )
            return bool(ok), list(responses)

        ok, responses = await self.call(what, run)
        gets: list[KV | None] = []
        for r in responses:
            if isinstance(r, list):  # a Get's answer: [(value, kv), ...]
                gets.append(_kv(r[0][1]) if r else None)
        return TxnResult(ok, gets)

    async def create(
        self,
        key: str,
        value: bytes,
        *,
        lease: int = 0,
        require: Sequence[Cmp] = (),
        also: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        """Put ``key`` only if it does not exist (and every ``require`` holds), with ``also`` in the same
        transaction.  On failure ``gets[0]`` is the existing value of ``key`` (None if the key is absent, i.e. a
        ``require`` failed), so a retried request recognises its own earlier write."""
        return await self.txn(
            f"create {key}", [absent(key), *require], [Put(key, value, lease), *also], [Get(key)]
        )

    async def compare_and_swap(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        """Replace ``key`` only if it is unchanged since ``mod_revision`` (0: only if it does not exist)."""
        cmp = absent(key) if mod_revision == 0 else mod_is(key, mod_revision)
        return (await self.txn(f"update {key}", [cmp], [Put(key, value, lease)])).succeeded

    # leases
    async def grant_lease(self, ttl: int) -> int:
        lease = await self.call("grant lease", lambda c: c.lease(ttl))
        return int(lease.id)

    async def refresh_lease(self, lease_id: int) -> int:
        """Keep a lease alive once; returns its new TTL in seconds, 0 when it no longer exists (expired)."""
        reply = await self.call("refresh lease", lambda c: c.refresh_lease(lease_id))
        return int(reply.TTL) if reply is not None else 0

    async def revoke_lease(self, lease_id: int) -> None:
        with contextlib.suppress(LeaseLostError):
            await self.call("revoke lease", lambda c: c.revoke_lease(lease_id))

    # watches
    async def watch(
        self, prefix: str, start_revision: int, *, reconnect: bool = False
    ) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` from ``start_revision`` (inclusive), in order.

        ``reconnect=False``: the iterator raises ClusterUnavailableError when the stream breaks (the cache then
        lists again).  ``reconnect=True``: it resumes from the next revision on whatever member answers, and
        raises only WatchCompactedError (history gone: list again)."""
        next_rev = start_revision
        while True:
            index = self._current
            client = self._client(index)
            try:
                stream = await asyncio.wait_for(
                    client.watch_prefix(_b(prefix), start_revision=next_rev), self.timeout
                )
                self.connected = True
                try:
                    async for ev in stream:
                        kind: Literal["put", "delete"] = "put" if ev.kind == "PUT" else "delete"
                        rev = int(ev.kv.mod_revision)
                        next_rev = rev + 1
                        yield WatchEvent(kind, ev.kv.key.decode(), bytes(ev.kv.value), rev)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(stream.cancel(), 1)
                error: BaseException | str = "the watch stream ended"
            except aetcd.RevisionCompactedError as e:
                raise WatchCompactedError(str(e)) from e
            except (aetcd.ClientError, *_TRANSIENT) as e:
                error = e
            self.connected = False
            self._current = (index + 1) % len(self.endpoints)
            if not reconnect:
                raise self.unavailable(f"watch {prefix}", error)
            log.info("etcd_watch_reconnect", prefix=prefix, revision=next_rev, error=str(error))
            await asyncio.sleep(0.2)
