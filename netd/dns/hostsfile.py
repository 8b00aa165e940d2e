"""``<etc_netns_dir>/<netns>/hosts`` for the two ends of each ``--link`` (see :mod:`netd.links`).

netd only ever changes or removes hosts files it wrote (they start with ``MARKER``); a directory goes only when
that leaves it empty.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

from netd.core.links import MARKER, hosts_files
from netd.core.model import DesiredState

log = structlog.get_logger()


class HostsWriter:
    """Keeps ``<etc_netns_dir>/<netns>/hosts`` in step with the links (a file only where a link is)."""

    def __init__(self, etc_netns_dir: Path) -> None:
        self.dir = etc_netns_dir
        self._written: dict[str, str] | None = None  # None: not synced yet in this process

    def sync(self, state: DesiredState, has_links: bool = True) -> None:
        """``has_links``: false when no endpoint has a ``--link`` (the endpoint index knows it at no cost): no
        file is wanted then, without a pass over every endpoint."""
        want = hosts_files(state) if has_links else {}
        if self._written is None:  # first pass: netd's files a previous run left whose links are gone
            self._written = {}
            if self.dir.is_dir():
                for d in self.dir.iterdir():
                    if d.name not in want and (d / "hosts").is_file():
                        self._written[d.name] = ""
        for name, text in want.items():
            if self._written.get(name) != text:
                self._write(name, text)
        for name in [n for n in self._written if n not in want]:
            self._remove(name)

    def _write(self, name: str, text: str) -> None:
        f = self.dir / name / "hosts"
        try:
            with contextlib.suppress(FileNotFoundError):
                if not f.read_text(errors="replace").startswith(MARKER):
                    log.warning("hosts_file_kept", netns=name, path=str(f), reason="not written by netd")
                    return
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(".hosts.netd-tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, f)
            if self._written is not None:
                self._written[name] = text
        except OSError as e:
            log.error("hosts_file_write_failed", netns=name, path=str(f), error=str(e))

    def _remove(self, name: str) -> None:
        if self._written is not None:
            self._written.pop(name, None)
        f = self.dir / name / "hosts"
        try:
            if f.read_text(errors="replace").startswith(MARKER):
                f.unlink()
        except OSError:
            return
        with contextlib.suppress(OSError):
            f.parent.rmdir()  # only when nothing else is in it
