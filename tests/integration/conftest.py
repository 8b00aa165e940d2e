from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from netdtest import Host, running_host


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("integration tests need root (they create network namespaces): run sudo make test")


@pytest.fixture(params=["nftables", "iptables"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Host]:
    """A running daemon in a fresh host namespace, once per firewall backend (the suite must pass on each)."""
    with running_host(tmp_path, config=f'[firewall]\nbackend = "{request.param}"') as h:
        yield h
