"""The state file: the desired state as a versioned JSON snapshot plus a journal of the changes since.

A change appends one JSON line to ``state.json.journal`` and fsyncs it: a record putting or deleting one object,
or a ``batch`` of such records when the change touches several (so a crash never leaves half a change, which
could replay as an inconsistent state).  Its cost does not grow with the number of endpoints (rewriting a
1000-endpoint snapshot took ~9 ms per change).  Every ``COMPACT_EVERY`` records (or at a save without a load
before it) the whole state is written as a new snapshot (temp file, fsync, rename, fsync of the directory; the
replaced snapshot is kept as ``state.json.prev``) and the journal starts again.  Records are idempotent (put /
delete by key), so a crash between the snapshot's rename and the journal's removal replays to the same state.
A torn last line (a crash mid-append) is ignored at load and cut off before the next append; anything else
that does not parse, a newer schema, or a state whose objects conflict (``state_check``) stops netd with a
message naming the file: it is never overwritten.

A write that does not complete (a short write or ENOSPC on a full disk, EDQUOT, EROFS, EIO, a failed fsync)
raises ``StorageError`` and leaves the files as they were: a journal append is truncated back to its previous
length, a snapshot that was not completely written never replaces the good one and its temp file is removed.
The caller (``Service._adopt``) saves before it makes a state current, so memory and kernel stay unchanged too.
Compaction comes *after* the change's append: the change is acknowledged once its records are in the journal,
and a compaction that fails (it needs room for the whole state) is logged and tried again at the next save.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from netd.core.epindex import EndpointIndex
from netd.core.errors import StateError, StorageError
from netd.core.model import SCHEMA_VERSION, DesiredState, Endpoint, Netns, Network
from netd.engine.state_check import state_problems

log = structlog.get_logger()

COMPACT_EVERY = 256
MAPS: dict[str, type[BaseModel]] = {"networks": Network, "netns": Netns, "endpoints": Endpoint}
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup = path.with_name(path.name + ".prev")
        self.journal = path.with_name(path.name + ".journal")
        self._saved: DesiredState | None = None  # what the files hold now
        self._saved_serial: int | None = None  # the EndpointIndex serial of _saved, when save was given one
        self._records = 0  # object records in the journal (a batch line holds several)
        self._journal_size = 0  # bytes of complete records in the journal: anything after them is cut off

    # -- load --------------------------------------------------------------------------------------------------

    def load(self) -> DesiredState:
        """The stored state; an empty one when there is no file yet.  Reads only (other processes may look at a
        running daemon's state) except for removing the temp files of processes that are gone."""
        self._remove_stale_temp_files()
        state = self._load_snapshot()
        self._records, self._journal_size = self._replay(state)
        problems = state_problems(state)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            journal = f" with its journal {self.journal}" if self._records else ""
            raise StateError(
                f"state file {self.path}{journal} is inconsistent: {'; '.join(problems[:5])}{more}. netd has "
                "changed nothing. Stop netd, remove or correct one object of each pair (in the journal the last "
                f"record of a key wins), or restore {self.backup}; then start netd again"
            )
        self._saved = state
        return state

    def _hint(self) -> str:
        return f"netd will not overwrite it. Restore {self.backup} or move the file away to start empty"

    def _load_snapshot(self) -> DesiredState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return DesiredState()
        except OSError as e:
            raise StateError(f"state file {self.path}: cannot read: {e.strerror}") from e
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StateError(f"state file {self.path}: not valid JSON ({e}); {self._hint()}") from e
        version = data.get("schema_version") if isinstance(data, dict) else None
        if not isinstance(version, int):
            raise StateError(f"state file {self.path}: no schema_version; restore {self.backup} or move it away")
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state file {self.path}: schema_version {version} is newer than this netd understands "
                f"({SCHEMA_VERSION}); run the newer netd or restore {self.backup}"
            )
        try:
            return DesiredState.model_validate(data)
        except ValidationError as e:
            raise StateError(f"state file {self.path}: {_first_error(e)}; {self._hint()}") from e

    def _replay(self, state: DesiredState) -> tuple[int, int]:
        """Apply the journal to ``state``: the number of complete records and their length in bytes."""
        try:
            raw = self.journal.read_bytes()
        except FileNotFoundError:
            return 0, 0
        except OSError as e:
            raise StateError(f"state journal {self.journal}: cannot read: {e.strerror}") from e
        lines = raw.split(b"\n")
        torn = lines.pop()  # b"" when the journal ends with a newline, as every complete record does
        if torn:
            log.warning(
                "state_journal_torn_record",
                path=str(self.journal),
                bytes=len(torn),
                note="a crash mid-write; ignored, and cut off before the next append",
            )
        records = 0
        for n, line in enumerate(lines, 1):
            try:
                records += _apply(state, json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValidationError) as e:
                what = _first_error(e) if isinstance(e, ValidationError) else str(e)
                raise StateError(
                    f"state journal {self.journal}: line {n} is not a valid record ({what}); netd will not "
                    f"overwrite it. Move it away to start from {self.path} alone"
                ) from e
        return records, len(raw) - len(torn)

    def _remove_stale_temp_files(self) -> None:
        """Temp files (``.state.json.<pid>.tmp``, ``.state.json.prev.<pid>.tmp``) of processes that are gone: a
        crash mid-snapshot.  A live process's are its snapshot under way."""
        for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            pid = tmp.name.removesuffix(".tmp").rpartition(".")[2]
            if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
                log.info("state_stale_temp_file_removed", path=str(tmp))
                _remove(tmp)
        legacy = self.backup.with_name(self.backup.name + ".tmp")  # netd before 2026-12 named it so
        if legacy.exists():
            _remove(legacy)

    # -- save --------------------------------------------------------------------------------------------------

    def save(self, state: DesiredState, index: EndpointIndex | None = None, snapshot: bool = False) -> None:
        """Store ``state`` durably, or raise ``StorageError`` having changed no file.  ``index``: the endpoint
        index of ``state``; it names the endpoints changed since the state saved last, if it knows (then only
        those are compared: no pass over every endpoint).  ``snapshot``: compact right after the append (a
        rollback: the journal can only put a removed endpoint back at the end, which would change the order a
        replay gives, and the order decides default-route and resolver ties)."""
        serial = index.serial if index is not None and index.state is state else None
        if self._saved is None:
            self._snapshot(state)
            self._saved_serial = serial
            return
        compact = self._records >= COMPACT_EVERY or snapshot
        since = index.changes_since(self._saved_serial) if index is not None and serial is not None else None
        records = diff(self._saved, state, since)
        if records:
            self._append(records)
            self._records += len(records)
        self._saved, self._saved_serial = state, serial
        if compact:
            try:
                self._snapshot(state)
            except StorageError as e:  # the change is in the journal: acknowledged all the same
                log.warning(
                    "state_compaction_failed",
                    path=str(self.path),
                    error=e.message,
                    journal_records=self._records,
                    note="the change is kept in the journal; compaction is tried again at the next change",
                )

    def _append(self, records: list[dict[str, Any]]) -> None:
        """``records`` as one line after the last complete record, fsync'd; on failure the journal is cut back."""
        line = records[0] if len(records) == 1 else {"op": "batch", "records": records}
        data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
        self._mkdir()
        new_file = not self.journal.exists()
        try:
            fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise self._storage_error(e, f"opening {self.journal.name}") from e
        good = self._journal_size
        try:
            size = os.fstat(fd).st_size
            if size > good:  # a torn record (a crash mid-append, or an undo that failed): never glue onto it
                os.ftruncate(fd, good)
                log.warning("state_journal_torn_record_truncated", path=str(self.journal), bytes=size - good)
            os.lseek(fd, min(size, good), os.SEEK_SET)
            _write_all(fd, data)
            os.fsync(fd)
            if new_file:
                _fsync_dir(self.path.parent)
        except OSError as e:
            self._cut_back(fd, good)
            os.close(fd)
            if new_file:
                _remove(self.journal)
            raise self._storage_error(e, f"appending to {self.journal.name}") from e
        os.close(fd)
        self._journal_size = min(size, good) + len(data)

    def _cut_back(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as e:  # the next append cuts it (it knows the good length); a load ignores a torn tail
            log.error("state_journal_cut_back_failed", path=str(self.journal), error=e.strerror)

    def _snapshot(self, state: DesiredState) -> None:
        """temp file + fsync + rename + fsync(dir); the replaced snapshot is kept as ``<file>.prev``.  The journal
        is removed only once the new snapshot's rename is durable; a failure before the rename replaces nothing."""
        self._mkdir()
        data = state.model_dump_json().encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        prev_tmp = self.path.with_name(f".{self.backup.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if self.path.exists():  # keep the previous version without a moment where the file is missing
                _remove(prev_tmp)
                os.link(self.path, prev_tmp)
                os.replace(prev_tmp, self.backup)
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)  # the rename is on disk before the journal goes
        except OSError as e:
            _remove(tmp)
            _remove(prev_tmp)
            raise self._storage_error(e, f"writing a new {self.path.name}") from e
        self._saved = state
        try:
            self.journal.unlink(missing_ok=True)
            _fsync_dir(self.path.parent)
        except OSError as e:  # its records are already in the snapshot and replay to the same state
            log.warning("state_journal_not_removed", path=str(self.journal), error=e.strerror)
        self._records = 0
        self._journal_size = self.journal.stat().st_size if self.journal.exists() else 0

    def _mkdir(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise self._storage_error(e, "creating the state directory") from e

    def _storage_error(self, e: OSError, action: str) -> StorageError:
        where = self.path.parent
        num = e.errno or 0
        if num in NO_SPACE:
            todo = f"Free space on the filesystem of {where} (see df {where}) or raise its quota, then retry"
        elif num == errno.EROFS:
            todo = f"Remount the filesystem of {where} read-write, then retry"
        elif num == errno.EIO:
            todo = f"Check the disk that holds {where} (dmesg), then retry"
        else:
            todo = f"Check {where} (owner, permissions, mount), then retry"
        reason = f"{e.strerror or os.strerror(num)} ({errno.errorcode.get(num, num)})"
        log.error("state_write_failed", path=str(where), action=action, error=reason)
        return StorageError(
            f"cannot save netd's state in {where}: {action} failed: {reason}; nothing was changed. {todo}",
            errno=num,
            no_space=num in NO_SPACE,
        )


def _write_all(fd: int, data: bytes) -> None:
    """Every byte of ``data``, or OSError: ``os.write`` may write less than it was given (a nearly full disk)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # no progress: the disk is full, and looping would spin
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("state_temp_file_not_removed", path=str(path), error=e.strerror)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def diff(old: DesiredState, new: DesiredState, endpoints: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Journal records turning ``old`` into ``new``.  Objects are shared between versions (``copy_for_change``),
    so an unchanged one is the same object: the comparison is by identity first, by value only when it differs.
    ``endpoints``: the only endpoint ids that may differ (None: any)."""
    out: list[dict[str, Any]] = []
    for name in MAPS:
        before: dict[str, BaseModel] = getattr(old, name)
        after: dict[str, BaseModel] = getattr(new, name)
        if name == "endpoints" and endpoints is not None:
            if _only_named_differ(before, after, endpoints):
                out += _diff_some(before, after, endpoints)
                continue
            # an endpoint came, went or changed that ``endpoints`` does not name: never guess, compare them all
            log.error("state_diff_hint_incomplete", named=len(endpoints), before=len(before), after=len(after))
        if before == after:  # one C-level pass (identity first): a connect changes no network nor netns
            continue
        for key, value in after.items():
            prev = before.get(key)
            if prev is not value and prev != value:
                out.append({"op": "put", "map": name, "key": key, "value": value.model_dump(mode="json")})
        out.extend({"op": "del", "map": name, "key": key} for key in before if key not in after)
    return out


def _only_named_differ(before: dict[str, BaseModel], after: dict[str, BaseModel], keys: Collection[str]) -> bool:
    """Whether ``after`` is ``before`` with only ``keys`` put or deleted: one C-level copy and one C-level
    compare (identity first), so a change set that forgot an endpoint (added, removed or replaced) is caught
    and the journal never misses an acknowledged change."""
    expect = dict(before)
    for k in keys:
        if k in after:
            expect[k] = after[k]
        else:
            expect.pop(k, None)
    return expect == after


def _diff_some(
    before: dict[str, BaseModel], after: dict[str, BaseModel], keys: Collection[str]
) -> list[dict[str, Any]]:
    """``diff`` of one map where only ``keys`` may differ: the same records in the same order (puts in the order
    of ``after``, as a replay inserts them, then dels)."""
    puts = [k for k in keys if k in after and before.get(k) is not after[k] and before.get(k) != after[k]]
    if len(puts) > 1:
        order = list(after)  # C-level; a change puts few endpoints
        puts.sort(key=order.index)
    out = [{"op": "put", "map": "endpoints", "key": k, "value": after[k].model_dump(mode="json")} for k in puts]
    dels = [k for k in keys if k in before and k not in after]
    if len(dels) > 1:
        order = list(before)
        dels.sort(key=order.index)
    return out + [{"op": "del", "map": "endpoints", "key": k} for k in dels]


def _apply(state: DesiredState, record: dict[str, Any]) -> int:
    """Apply one journal line; the number of object records in it."""
    if record["op"] == "batch":
        inner = record["records"]
        if not isinstance(inner, list) or not all(isinstance(r, dict) and r.get("op") != "batch" for r in inner):
            raise TypeError("a batch holds a list of put/del records")
        for r in inner:
            _apply(state, r)
        return len(inner)
    model = MAPS.get(record["map"])
    if model is None:
        raise KeyError(f"unknown map {record['map']!r}")
    target: dict[str, Any] = getattr(state, record["map"])
    if record["op"] == "put":
        target[record["key"]] = model.model_validate(record["value"])
    elif record["op"] == "del":
        target.pop(record["key"], None)
    else:
        raise KeyError(f"unknown op {record['op']!r}")
    return 1


def _first_error(e: ValidationError) -> str:
    first = e.errors()[0]
    return ".".join(str(x) for x in first["loc"]) + ": " + first["msg"]
