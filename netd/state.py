"""The state file: the desired state as versioned JSON, written atomically, previous version kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from .errors import StateError
from .model import SCHEMA_VERSION, DesiredState


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.backup = path.with_name(path.name + ".prev")

    def load(self) -> DesiredState:
        """The stored state; an empty one when there is no file yet.

        A corrupt file or one of a newer schema raises StateError and is left exactly as it is.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return DesiredState()
        except OSError as e:
            raise StateError(f"state file {self.path}: cannot read: {e.strerror}") from e
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StateError(
                f"state file {self.path}: not valid JSON ({e}); netd will not overwrite it. "
                f"Restore {self.backup} or move the file away to start empty"
            ) from e
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
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise StateError(
                f"state file {self.path}: {loc}: {first['msg']}; netd will not overwrite it. "
                f"Restore {self.backup} or move the file away to start empty"
            ) from e

    def save(self, state: DesiredState) -> None:
        """temp file + fsync + rename + fsync(dir); the replaced version is kept as ``<file>.prev``."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = state.model_dump_json().encode()  # compact: the file grows with every endpoint
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
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
