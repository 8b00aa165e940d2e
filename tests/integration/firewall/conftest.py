"""Fixtures for the real-kernel firewall tests (root); the topology is described in fwtopo.py."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from fwtopo import NetnsLoop, Topology, build_topology, need_root, teardown_topology

_counter = itertools.count()


@pytest.fixture
def topo() -> Iterator[Topology]:
    need_root()
    tag = f"nfw{os.getpid() % 100000}x{next(_counter)}"
    t = Topology(tag, f"{tag}-h", f"{tag}-c1", f"{tag}-c2", f"{tag}-c3", f"{tag}-o")
    try:
        build_topology(t)
        yield t
    finally:
        teardown_topology(t)
    leftover = [ns for ns in t.namespaces if os.path.exists(f"/run/netns/{ns}")]
    assert not leftover, f"namespaces left behind: {leftover}"


@pytest.fixture
def host_loop(topo: Topology) -> Iterator[NetnsLoop]:
    loop = NetnsLoop(f"/run/netns/{topo.host}")
    try:
        yield loop
    finally:
        loop.stop()
