"""Helpers for the kernel layer tests: every test runs inside namespaces it creates, never in the machine's own.

``run_in_host(body)`` runs ``asyncio.run(body(kernel))`` in a thread that first ``setns()``-ed into a fresh test
namespace ``t-<random>`` (the "host").  Named namespaces made by the code go to a private netns dir under
``/run/netd-test-<random>/netns``; everything is unmounted and removed afterwards, even on failure.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netd.kernel.facade import Kernel

CLONE_NEWNET = 0x40000000
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces)")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def nsip(nspath: str, *args: str) -> Any:
    """``ip -j ...`` inside the namespace at ``nspath`` (works for files outside /run/netns too)."""
    out = sh("nsenter", f"--net={nspath}", "ip", "-j", *args).stdout
    return json.loads(out) if out.strip() else []


def mountpoints() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line.split(" ")[4] for line in f]


def umount_all_under(root: Path) -> None:
    prefix = str(root)
    for _ in range(10):  # stacked mounts (a dir bind-mounted onto itself) need several passes
        mps = sorted((m for m in mountpoints() if m == prefix or m.startswith(prefix + "/")), reverse=True)
        if not mps:
            return
        for mp in mps:
            _libc.umount2(mp.encode(), MNT_DETACH)


@dataclass
class Env:
    host_name: str
    host_path: str
    netns_dir: Path

    def run(self, body: Callable[[Kernel], Awaitable[Any]]) -> Any:
        """Run ``body(kernel)`` on a fresh event loop in a thread inside the host namespace."""
        box: dict[str, Any] = {}

        def thread() -> None:
            try:
                fd = os.open(self.host_path, os.O_RDONLY)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)

                async def main() -> Any:
                    kernel = Kernel(self.netns_dir)
                    try:
                        return await body(kernel)
                    finally:
                        await kernel.close()

                box["result"] = asyncio.run(main())
            except BaseException as exc:
                box["error"] = exc

        t = threading.Thread(target=thread, name="test-host")
        t.start()
        t.join(120)
        if t.is_alive():
            raise TimeoutError("test body did not finish")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def ip(self, *args: str) -> Any:
        return nsip(self.host_path, *args)

    def ns(self, name: str) -> str:
        return str(self.netns_dir / name)
