"""The locks of the service and the reconciler, which remember since when they are held (the watchdog's view:
``netd.ops.progress``)."""

from __future__ import annotations

import asyncio
import time
from typing import Literal


class TimedLock(asyncio.Lock):
    """An asyncio.Lock that remembers since when it is held (monotonic seconds; None when free)."""

    def __init__(self) -> None:
        super().__init__()
        self.held_since: float | None = None

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.held_since = time.monotonic()
        return True

    def release(self) -> None:
        self.held_since = None
        super().release()
