"""The state store on a failing disk: a write that does not complete changes nothing, in memory or on disk.

A ``Disk`` stands in for a nearly full filesystem: ``os.write`` writes at most the bytes still free (a short
write), then raises ENOSPC, exactly as the kernel does on a full filesystem.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from netd.core.config import Settings
from netd.core.errors import KernelError, StateError, StorageError
from netd.core.model import DesiredState, Netns
from netd.engine import state as state_mod
from netd.engine.plan import Scope
from netd.engine.service import Service
from netd.engine.state import StateStore

REAL_WRITE = os.write


class Disk:
    """``free`` bytes left; ``None``: unlimited.  Counts the writes it refused."""

    def __init__(self, free: int | None = None, err: int = errno.ENOSPC) -> None:
        self.free = free
        self.err = err
        self.refused = 0

    def write(self, fd: int, data: bytes) -> int:
        if self.free is None:
            return REAL_WRITE(fd, data)
        if self.free == 0:
            self.refused += 1
            raise OSError(self.err, os.strerror(self.err))
        n = REAL_WRITE(fd, bytes(data[: self.free]))
        self.free -= n
        return n


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    d = Disk()
    monkeypatch.setattr(os, "write", d.write)
    return d


def _with(state: DesiredState, *names: str) -> DesiredState:
    new = state.copy_for_change()
    for name in names:
        new.netns[name] = Netns(name=name)
    return new


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _lines(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def _started(tmp_path: Path) -> tuple[StateStore, DesiredState]:
    """A store with a snapshot (one netns) and a journal of two records."""
    s1 = _with(DesiredState(), "a")
    StateStore(tmp_path / "state.json").save(s1)  # never loaded: a snapshot
    store = StateStore(tmp_path / "state.json")
    assert store.load() == s1
    s2 = _with(s1, "b", "c")
    store.save(s2)
    return store, s2


@pytest.mark.parametrize("free", [0, 10, 60])
def test_a_short_journal_append_leaves_the_journal_as_it_was(tmp_path: Path, disk: Disk, free: int) -> None:
    store, s2 = _started(tmp_path)
    before = _files(tmp_path)
    disk.free = free  # 60: the first of two records fits, the second does not
    s3 = _with(s2, "d" * 40, "e" * 40)
    with pytest.raises(StorageError) as e:
        store.save(s3)
    assert e.value.no_space
    assert str(tmp_path) in e.value.message and "Free space on" in e.value.message
    assert _files(tmp_path) == before  # no torn record, no stray file
    assert StateStore(tmp_path / "state.json").load() == s2
    disk.free = None  # space freed: the same change is stored whole, and the next one after it
    store.save(s3)
    s4 = _with(s3, "f")
    store.save(s4)
    assert StateStore(tmp_path / "state.json").load() == s4


def test_a_failed_fsync_is_a_storage_error_and_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, s2 = _started(tmp_path)
    before = _files(tmp_path)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(StorageError) as e:
        store.save(_with(s2, "d"))
    assert not e.value.no_space and "Input/output error" in e.value.message
    monkeypatch.undo()
    assert _files(tmp_path) == before
    assert StateStore(tmp_path / "state.json").load() == s2


def test_a_write_that_makes_no_progress_does_not_spin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, s2 = _started(tmp_path)
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(StorageError):
        store.save(_with(s2, "d"))


@pytest.mark.parametrize(("err", "no_space"), [(errno.EDQUOT, True), (errno.EROFS, False), (errno.EIO, False)])
def test_storage_errors_say_why(tmp_path: Path, disk: Disk, err: int, no_space: bool) -> None:
    store, s2 = _started(tmp_path)
    disk.free, disk.err = 0, err
    with pytest.raises(StorageError) as e:
        store.save(_with(s2, "d"))
    assert e.value.no_space is no_space
    assert os.strerror(err) in e.value.message and str(tmp_path) in e.value.message


def test_a_failed_compaction_keeps_the_change_in_the_journal(
    tmp_path: Path, disk: Disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction needs room for a whole snapshot; the change itself only for its records.  When the snapshot does
    not fit, the change stays acknowledged in the journal, the old snapshot stays, and compaction is tried again
    at the next save."""
    monkeypatch.setattr(state_mod, "COMPACT_EVERY", 2)
    store, s2 = _started(tmp_path)  # three records: compaction is due at the next save
    snapshot = (tmp_path / "state.json").read_bytes()
    s3 = _with(s2, "d" * 40)
    disk.free = len(_lines(state_mod.diff(s2, s3))) + 20  # room for the change's record, not for a snapshot
    with capture_logs() as logs:
        store.save(s3)
    assert any(e["event"] == "state_compaction_failed" for e in logs)
    assert (tmp_path / "state.json").read_bytes() == snapshot
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert StateStore(tmp_path / "state.json").load() == s3
    disk.free = None
    s4 = _with(s3, "e")
    store.save(s4)  # compaction is retried
    assert not (tmp_path / "state.json.journal").exists()
    assert json.loads((tmp_path / "state.json").read_bytes())["netns"].keys() == s4.netns.keys()
    assert StateStore(tmp_path / "state.json").load() == s4


def test_a_snapshot_that_cannot_be_written_replaces_nothing(tmp_path: Path, disk: Disk) -> None:
    """A save with no load before it writes a whole snapshot: a short one must never replace the good one."""
    _store, s2 = _started(tmp_path)
    StateStore(tmp_path / "state.json").save(s2)  # never loaded: a snapshot holding everything, no journal
    before = _files(tmp_path)
    disk.free = 20
    fresh = StateStore(tmp_path / "state.json")  # never loaded: its save is a snapshot
    with pytest.raises(StorageError):
        fresh.save(_with(s2, "x"))
    assert _files(tmp_path) == before
    assert StateStore(tmp_path / "state.json").load() == s2


def test_stale_temp_files_are_removed_at_load(tmp_path: Path) -> None:
    _store, s2 = _started(tmp_path)
    (tmp_path / ".state.json.99999999.tmp").write_bytes(b'{"schema_version":1,"netw')  # no such process
    (tmp_path / ".state.json.prev.99999999.tmp").write_bytes(b"{}")
    (tmp_path / "state.json.prev.tmp").write_bytes(b"{}")  # as older versions named it
    busy = tmp_path / f".state.json.{os.getppid()}.tmp"  # a live process's snapshot under way: left alone
    busy.write_bytes(b"{")
    assert StateStore(tmp_path / "state.json").load() == s2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([busy.name, "state.json", "state.json.journal"])


def test_a_torn_tail_is_cut_off_before_the_next_append(tmp_path: Path) -> None:
    """A load only reads (tools and tests read a running daemon's state, whose append may be under way); the
    store's first append cuts the torn record off, so the new record is not glued onto it."""
    _store, s2 = _started(tmp_path)
    journal = tmp_path / "state.json.journal"
    good = journal.read_bytes()
    torn = b'{"op":"put","map":"ne'
    journal.write_bytes(good + torn)  # a crash mid-append
    reopened = StateStore(tmp_path / "state.json")
    with capture_logs() as logs:
        assert reopened.load() == s2
    assert next(e for e in logs if e["event"] == "state_journal_torn_record")["bytes"] == len(torn)
    s3 = _with(s2, "d")
    with capture_logs() as logs:
        reopened.save(s3)
    event = next(e for e in logs if e["event"] == "state_journal_torn_record_truncated")
    assert event["bytes"] == len(torn)
    assert journal.read_bytes() == good + _lines(state_mod.diff(s2, s3))
    assert StateStore(tmp_path / "state.json").load() == s3


class NeverCalled:
    async def apply(self, scope: Scope, reason: str) -> dict[str, str]:
        raise AssertionError(f"the kernel was asked to apply {reason!r}")

    def netns_foreign(self, name: str) -> str | None:  # netns create asks: is the name mounted by another tool?
        return None


def test_a_change_that_cannot_be_stored_reaches_neither_memory_nor_kernel(tmp_path: Path, disk: Disk) -> None:
    store = StateStore(tmp_path / "state.json")
    svc = Service(Settings(state_dir=tmp_path), store, store.load(), NeverCalled(), kernel=NeverCalled())  # type: ignore[arg-type]
    before = svc.state
    disk.free = 0
    with pytest.raises(StorageError):
        asyncio.run(svc.create_netns({"Name": "web"}))
    assert svc.state is before
    assert StateStore(tmp_path / "state.json").load() == before


class FailsAndFillsTheDisk:
    """The kernel refuses the change, and the disk fills up before the rollback is stored."""

    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        self.reasons: list[str] = []

    async def apply(self, scope: Scope, reason: str) -> dict[str, str]:
        self.reasons.append(reason)
        if len(self.reasons) == 1:
            self.disk.free = 0
            return {next(iter(scope.netns or {"x"})): "netns web: mount failed: Operation not permitted (1)"}
        return {}

    def netns_foreign(self, name: str) -> str | None:
        return None


def test_a_rollback_that_cannot_be_stored_still_goes_back(tmp_path: Path, disk: Disk) -> None:
    """The change was refused to the client, so memory and kernel go back to the old state; the file, which
    still holds the change, is corrected by the next save that succeeds."""
    store = StateStore(tmp_path / "state.json")
    applier = FailsAndFillsTheDisk(disk)
    svc = Service(Settings(state_dir=tmp_path), store, store.load(), applier, kernel=applier)  # type: ignore[arg-type]
    before = svc.state
    with pytest.raises(KernelError, match="rolled back"):
        asyncio.run(svc.create_netns({"Name": "web"}))
    assert svc.state is before
    assert applier.reasons == ["netns create web", "rollback netns create web"]
    disk.free = None
    asyncio.run(svc.create_netns({"Name": "db"}))
    assert set(StateStore(tmp_path / "state.json").load().netns) == {"db"}


def test_a_change_is_all_or_nothing_at_any_cut(tmp_path: Path) -> None:
    """A crash can cut an append anywhere (SIGKILL stops a multi-page write between pages): whatever prefix of a
    change's bytes reached the disk, the journal loads as before the change or, complete, as after it, never as a
    half change (here: the netns gone but its endpoint kept, which the load would refuse as inconsistent)."""
    store, s2 = _started(tmp_path)
    journal = tmp_path / "state.json.journal"
    good = journal.read_bytes()
    s3 = _with(s2, "d", "e")
    del s3.netns["a"]
    store.save(s3)  # three records
    change = journal.read_bytes()[len(good) :]
    for cut in range(1, len(change)):
        journal.write_bytes(good + change[:cut])
        assert StateStore(tmp_path / "state.json").load() == s2, cut
    journal.write_bytes(good + change)
    assert StateStore(tmp_path / "state.json").load() == s3


@pytest.mark.parametrize(
    "line",
    [
        b'{"op":"batch","records":{"op":"del"}}',
        b'{"op":"batch","records":[3]}',
        b'{"op":"batch","records":[{"op":"batch","records":[]}]}',
    ],
)
def test_a_malformed_batch_is_refused(tmp_path: Path, line: bytes) -> None:
    _started(tmp_path)
    journal = tmp_path / "state.json.journal"
    journal.write_bytes(journal.read_bytes() + line + b"\n")
    with pytest.raises(StateError, match="line 2 is not a valid record"):  # after the one line of _started
        StateStore(tmp_path / "state.json").load()


def test_a_first_append_that_fails_leaves_no_journal(tmp_path: Path, disk: Disk) -> None:
    s1 = _with(DesiredState(), "a")
    StateStore(tmp_path / "state.json").save(s1)
    store = StateStore(tmp_path / "state.json")
    store.load()
    disk.free = 10
    with pytest.raises(StorageError):
        store.save(_with(s1, "b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
