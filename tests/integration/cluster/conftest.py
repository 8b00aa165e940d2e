from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from etcdfix import EtcdCluster, etcd_cluster


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """One throw-away etcd member on 127.0.0.1 (free ports, data in tmp_path); always stopped."""
    with etcd_cluster(tmp_path, 1) as c:
        yield c


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A three-member etcd cluster on 127.0.0.1; always stopped."""
    with etcd_cluster(tmp_path, 3) as c:
        yield c
