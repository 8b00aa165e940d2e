"""Helpers for the cluster tests: run a coroutine, make stores, wait for a condition (with a deadline that only
guards against a hang; no test asserts on timing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from netd.cluster.keys import KeyLayout
from netd.cluster.store import ClusterStore

T = TypeVar("T")
KEYS = KeyLayout("/netd-test/v1")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def store(endpoints: Sequence[str], timeout: float = 2.0) -> ClusterStore:
    return ClusterStore(endpoints, timeout=timeout)


async def until(check: Callable[[], Awaitable[bool] | bool], deadline: float = 20) -> bool:
    """Poll ``check`` every 50 ms until it is true; False after ``deadline`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while loop.time() < end:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return True
        await asyncio.sleep(0.05)
    return False
