"""Persistent threads for the short namespace jobs of the hot path (a new veth's namespace side, see vethup).

``netns.in_fresh_thread`` starts a thread per job so that a ``setns()`` never leaks into a thread that does
other work.  Starting one costs little on an idle machine (0.1 ms) but the event loop blocks until the new
thread has been scheduled: on a busy 2-core machine that was 1-4 ms per connect (p90 1.1 ms for an empty job
at load 6, against 0.04 ms for a job handed to a waiting thread).  These workers keep the guarantee another
way: a job starts in the caller's network namespace (netd's: the event loop's thread's, handed over as an fd
with the job) and may ``setns()`` the worker anywhere; afterwards the worker goes back to the caller's namespace
and checks it is there by inode before it takes the next job.  A worker that cannot get back exits (the next
job starts a new one); one inside another namespace holds it alive only for the job.  Slow cleanup a job
leaves (closing an AF_PACKET socket waits for an RCU grace period) goes to a separate closer thread, so it
never delays the next job.

Only jobs that change nothing but the thread's network namespace belong here (no ``unshare``, no mount
namespace changes: those keep their fresh thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from netd.kernel.netns import OWN_NS, return_to

log = structlog.get_logger()

T = TypeVar("T")
WORKERS = 2  # as many as the cores of the machines netd was measured on; jobs are short

# fn, after, the caller's namespace (fd, inode), the caller's loop and future
Job = tuple[
    Callable[[], Any], Callable[[], None] | None, int, int, asyncio.AbstractEventLoop, "asyncio.Future[Any]"
]


def _deliver(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class NsWorkers:
    def __init__(self, workers: int = WORKERS) -> None:
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._cleanups: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._max = workers
        self._alive = 0
        self._closer = False
        self._lock = threading.Lock()

    async def run(self, fn: Callable[[], T], after: Callable[[], None] | None = None) -> T:
        """``fn()`` in a worker (it may setns() into another network namespace); ``after`` once its result is
        handed back, in the closer thread (its errors are ignored)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        home = os.open(OWN_NS, os.O_RDONLY | os.O_CLOEXEC)  # the caller's namespace: where the job starts
        try:
            inode = os.fstat(home).st_ino
            self._start()
        except BaseException:
            os.close(home)
            raise
        self._jobs.put((fn, after, home, inode, loop, fut))  # the worker closes ``home``
        return await fut

    def _start(self) -> None:
        with self._lock:
            while self._alive < self._max:
                self._alive += 1
                threading.Thread(target=self._work, name="netd-nsworker", daemon=True).start()
            if not self._closer:
                self._closer = True
                threading.Thread(target=self._close, name="netd-nscloser", daemon=True).start()

    def _work(self) -> None:
        try:
            while True:
                fn, after, home, inode, loop, fut = self._jobs.get()
                try:
                    if not return_to(home, inode):
                        raise OSError(errno.EINVAL, "namespace worker: cannot enter the caller's namespace")
                    ok, value = True, fn()
                except BaseException as exc:  # delivered to the caller
                    ok, value = False, exc
                back = return_to(home, inode)
                os.close(home)
                loop.call_soon_threadsafe(_deliver, fut, ok, value)
                if after is not None:
                    self._cleanups.put(after)
                if not back:
                    log.error("nsworker_lost_its_namespace", action="the worker exits; a new one takes its place")
                    return
        finally:
            with self._lock:
                self._alive -= 1

    def _close(self) -> None:
        while True:
            cleanup = self._cleanups.get()
            with contextlib.suppress(Exception):
                cleanup()


WORKERS_POOL = NsWorkers()
