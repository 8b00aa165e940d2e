"""Fixtures for the netd-ctl tests: a short temp dir and a fake netd on a Unix socket."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from netdctl_fake import FakeNetd, Handler, Server


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="netdctl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_netd(short_tmp: Path) -> Iterator[FakeNetd]:
    fake = FakeNetd(str(short_tmp / "netd.sock"))
    server = Server(fake.socket_path, Handler)
    server.fake = fake
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
