"""The state file: the desired state as a versioned JSON snapshot plus a journal of the changes since.

A change appends one JSON line per object put or deleted to ``state.json.journal`` and fsyncs it: its cost does
not grow with the number of endpoints (rewriting a 1000-endpoint snapshot took ~9 ms per change).  Every
``COMPACT_EVERY`` records (or at a save without a load before it) the whole state is written as a new snapshot
(temp file, fsync, rename, fsync of the directory; the replaced snapshot is kept as ``state.json.prev``) and the
journal starts again.  Records are idempotent (put / delete by key), so a crash between the snapshot's rename and
the journal's removal replays to the same state.  A torn last line (a crash mid-append) is ignored; anything
else that does not parse, or a newer schema, stops netd with a message naming the file: it is never overwritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from .errors import StateError
from .model import SCHEMA_VERSION, DesiredState, Endpoint, Netns, Network

log = structlog.get_logger()

COMPACT_EVERY = 256
MAPS: dict[str, type[BaseModel]] = {"networks": Network, "netns": Netns, "endpoints": Endpoint}


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup = path.with_name(path.name + ".prev")
        self.journal = path.with_name(path.name + ".journal")
        self._saved: DesiredState | None = None  # what the files hold now
        self._records = 0  # lines in the journal

    # -- load --------------------------------------------------------------------------------------------------

    def load(self) -> DesiredState:
        """The stored state; an empty one when there is no file yet."""
        state = self._load_snapshot()
        self._records = self._replay(state)
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

    def _replay(self, state: DesiredState) -> int:
        try:
            raw = self.journal.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise StateError(f"state journal {self.journal}: cannot read: {e.strerror}") from e
        lines = raw.split(b"\n")
        torn = lines.pop()  # b"" when the journal ends with a newline, as every complete record does
        if torn:
            log.warning("state_journal_torn_record", path=str(self.journal), note="a crash mid-write; ignored")
        for n, line in enumerate(lines, 1):
            try:
                _apply(state, json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValidationError) as e:
                what = _first_error(e) if isinstance(e, ValidationError) else str(e)
                raise StateError(
                    f"state journal {self.journal}: line {n} is not a valid record ({what}); netd will not "
                    f"overwrite it. Move it away to start from {self.path} alone"
                ) from e
        return len(lines)

    # -- save --------------------------------------------------------------------------------------------------

    def save(self, state: DesiredState) -> None:
        if self._saved is None or self._records >= COMPACT_EVERY:
            self._snapshot(state)
            return
        records = diff(self._saved, state)
        if records:
            self._append(records)
            self._records += len(records)
        self._saved = state

    def _append(self, records: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        fd = os.open(self.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _snapshot(self, state: DesiredState) -> None:
        """temp file + fsync + rename + fsync(dir); the replaced snapshot is kept as ``<file>.prev``."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = state.model_dump_json().encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.path.exists():  # keep the previous version without a moment where the file is missing
            prev_tmp = self.backup.with_name(self.backup.name + ".tmp")
            prev_tmp.unlink(missing_ok=True)
            os.link(self.path, prev_tmp)
            os.replace(prev_tmp, self.backup)
        os.replace(tmp, self.path)
        self.journal.unlink(missing_ok=True)  # a crash before this line replays idempotent records: no harm
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._saved = state
        self._records = 0


def diff(old: DesiredState, new: DesiredState) -> list[dict[str, Any]]:
    """Journal records turning ``old`` into ``new``.  Objects are shared between versions (``copy_for_change``),
    so an unchanged one is the same object: the comparison is by identity first, by value only when it differs."""
    out: list[dict[str, Any]] = []
    for name in MAPS:
        before: dict[str, BaseModel] = getattr(old, name)
        after: dict[str, BaseModel] = getattr(new, name)
        for key, value in after.items():
            prev = before.get(key)
            if prev is not value and prev != value:
                out.append({"op": "put", "map": name, "key": key, "value": value.model_dump(mode="json")})
        out.extend({"op": "del", "map": name, "key": key} for key in before if key not in after)
    return out


def _apply(state: DesiredState, record: dict[str, Any]) -> None:
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


def _first_error(e: ValidationError) -> str:
    first = e.errors()[0]
    return ".".join(str(x) for x in first["loc"]) + ": " + first["msg"]
