"""Fixtures for the kernel layer tests (helpers live in kernelenv.py)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernelenv import Env, need_root, sh, umount_all_under


@pytest.fixture
def env() -> Iterator[Env]:
    need_root()
    tag = secrets.token_hex(4)
    host = f"t-{tag}"
    base = Path(f"/run/netd-test-{tag}")
    netns_dir = base / "netns"
    sh("ip", "netns", "add", host)
    try:
        yield Env(host, f"/run/netns/{host}", netns_dir)
    finally:
        umount_all_under(base)
        shutil.rmtree(base, ignore_errors=True)
        sh("ip", "netns", "del", host, check=False)
