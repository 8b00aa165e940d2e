"""Lock order: service lock -> reconciler lock, never the reverse.

A full reconcile that finds a foreign namespace gone used to prune the endpoint from inside the reconciler lock
(prune takes the service lock) while a request held the service lock and waited for the reconciler: both waited
forever.  The fake kernel holds the request in a kernel read until the reconcile is waiting for the service.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, cast

from fakekernel import FakeFirewall, FakeKernel
from samples import NET_ID, one_endpoint_state

from netd.core.config import Settings
from netd.core.model import Endpoint
from netd.engine.reconciler import Reconciler
from netd.engine.service import Service
from netd.engine.state import StateStore
from netd.ops.metrics import ReconcileStats

GONE_PATH = "/proc/4242424/ns/net"
FOREIGN_EP = "f" * 64


def build(tmp_path: Path) -> tuple[Service, Reconciler, FakeKernel]:
    settings = Settings(state_dir=tmp_path / "state", run_dir=tmp_path / "run", netns_dir=tmp_path / "netns")
    state = one_endpoint_state()
    ep = Endpoint(
        id=FOREIGN_EP,
        network=NET_ID,
        netns_path=GONE_PATH,
        netns_inode=4242,
        ifname="eth0",
        host_ifname="vethf",
        mac="02:00:00:00:00:02",
        ipv4=IPv4Interface("172.30.0.3/24"),
    )
    state.endpoints[ep.id] = ep
    store = StateStore(settings.state_file)
    store.save(state)
    kernel = FakeKernel()
    holder: dict[str, Service] = {}
    rec = Reconciler(
        settings,
        cast(Any, kernel),
        FakeFirewall(),
        lambda: holder["svc"].state,
        lambda ids, why: holder["svc"].prune_endpoints(ids, why),
        ReconcileStats(),
    )
    svc = Service(settings, store, store.load(), applier=rec, kernel=cast(Any, kernel))
    holder["svc"] = svc
    return svc, rec, kernel


async def _race(svc: Service, rec: Reconciler, kernel: FakeKernel) -> None:
    kernel.gate = asyncio.Event()
    create = asyncio.create_task(svc.create_network({"Name": "x"}))  # holds the service lock, reads the kernel
    for _ in range(5):
        await asyncio.sleep(0)
    assert svc.lock.locked()
    full = asyncio.create_task(rec.reconcile("event"))  # finds the foreign namespace gone
    for _ in range(20):
        await asyncio.sleep(0)
    kernel.gate.set()
    await asyncio.wait_for(asyncio.gather(create, full), timeout=5)


def test_prune_during_a_request_does_not_deadlock(tmp_path: Path) -> None:
    svc, rec, kernel = build(tmp_path)
    asyncio.run(_race(svc, rec, kernel))
    assert "x" in svc.state.networks
    assert FOREIGN_EP not in svc.state.endpoints  # pruned
    assert FOREIGN_EP not in svc.store.load().endpoints
    assert GONE_PATH in kernel.forgotten
    assert not svc.lock.locked() and not rec.lock.locked()
