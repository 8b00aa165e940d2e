"""The watchdog is fed only while netd makes progress: a lock held too long or a stuck API request stops
WATCHDOG=1, and STATUS= says what is stuck (a datagram socket stands in for systemd's NOTIFY_SOCKET)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_lock_order import build

from netd.ops.progress import Health, InFlight, notify_loop

BOUND = 3600.0  # seconds; "held too long" is simulated by moving the start back, no timing involved


def _drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def _ticks(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0.01)


async def _run(tmp_path: Path, sock: socket.socket) -> dict[str, list[str]]:
    svc, rec, _ = build(tmp_path)
    inflight = InFlight()
    health = Health({"reconciler": rec.lock, "service": svc.lock}, inflight, BOUND)
    loop = asyncio.create_task(notify_loop(0.005, 10.0, lambda: "3 networks", health))
    seen: dict[str, list[str]] = {}
    try:
        await _ticks(5)
        seen["healthy"] = _drain(sock)
        async with rec.lock:
            await _ticks(5)
            seen["held_briefly"] = _drain(sock)
            assert rec.lock.held_since is not None
            rec.lock.held_since -= 2 * BOUND  # as if a full reconcile had hung for two hours
            seen["held_briefly"] += _drain(sock)
            await _ticks(5)
            seen["lock_stuck"] = _drain(sock)
        await _ticks(5)
        seen["released"] = _drain(sock)
        gate = asyncio.Event()

        async def handler(request: Any) -> Any:
            await gate.wait()
            return "done"

        request = SimpleNamespace(method="POST", path="/v1/networks")
        pending = asyncio.create_task(inflight.middleware()(request, handler))
        await _ticks(2)
        (key,) = inflight.requests
        start, what = inflight.requests[key]
        inflight.requests[key] = (start - 2 * BOUND, what)
        _drain(sock)  # sent while the request was merely running
        await _ticks(5)
        seen["request_stuck"] = _drain(sock)
        gate.set()
        assert await pending == "done"
        assert not inflight.requests
        await _ticks(5)
        seen["request_done"] = _drain(sock)
    finally:
        loop.cancel()
    return seen


def test_watchdog_stops_while_stuck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        seen = asyncio.run(_run(tmp_path, sock))
    assert "WATCHDOG=1" in seen["healthy"][0] and "STATUS=3 networks" in seen["healthy"][0]
    assert all(m == "WATCHDOG=1" for m in seen["healthy"][1:])
    assert seen["held_briefly"] and all(m == "WATCHDOG=1" for m in seen["held_briefly"])  # busy is not stuck
    assert seen["lock_stuck"], "STATUS= must say what is stuck"
    assert not any("WATCHDOG=1" in m for m in seen["lock_stuck"])
    assert "STATUS=STUCK" in seen["lock_stuck"][0] and "the reconciler lock is held for" in seen["lock_stuck"][0]
    assert "WATCHDOG=1" in seen["released"][0] and "STATUS=3 networks" in seen["released"][0]
    assert not any("WATCHDOG=1" in m for m in seen["request_stuck"])
    assert "API request POST /v1/networks is running for" in seen["request_stuck"][0]
    assert any("WATCHDOG=1" in m for m in seen["request_done"])


def test_health_names_every_stuck_thing() -> None:
    lock = SimpleNamespace(held_since=time.monotonic() - 10)
    health = Health({"service": lock}, InFlight(), 5.0)  # type: ignore[dict-item]
    (what,) = health.stuck()
    assert "the service lock is held for" in what
    lock.held_since = None
    assert health.stuck() == []
