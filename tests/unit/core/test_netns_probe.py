"""kernel.netns.probe: what a namespace path is, without ever opening a FIFO or a device for reading."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from netd.kernel import netns


def test_own_namespace_is_recognised() -> None:
    found = netns.probe("/proc/self/ns/net")
    assert found.ident is not None
    assert found.own == "netd"


def test_init_namespace_is_recognised(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # PID 1's namespace cannot be opened here (it holds capabilities the test lacks): stand in for it
    monkeypatch.setattr(netns, "OWN_NS", str(tmp_path / "none"))
    monkeypatch.setattr(netns, "INIT_NS", "/proc/self/ns/net")
    assert netns.probe("/proc/self/ns/net").own == "init"


def test_other_kinds_of_namespace_and_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: an O_RDONLY open would block forever
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        got = {name: netns.probe(str(tmp_path / name)).problem for name in ("fifo", "file", "dir", "sock", "nope")}
    assert got == {
        "fifo": "is a FIFO",
        "file": "is a regular file",
        "dir": "is a directory",
        "sock": "is a socket",
        "nope": "does not exist",
    }
    assert netns.probe("/dev/null").problem == "is a character device"
    assert netns.probe("/proc/self/ns/uts").problem == "is a UTS namespace"
    assert not netns.ns_alive(str(fifo))
    assert netns.ns_alive("/proc/self/ns/net")
