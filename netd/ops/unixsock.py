"""Unix sockets that are never open to other users, not even between bind and chmod (the API and metrics)."""

from __future__ import annotations

import contextlib
import grp
import os
from pathlib import Path

from aiohttp import web


async def start_private(site: web.UnixSite, path: Path, mode: int, group: str | None) -> None:
    """Bind ``site`` under umask 077 (0700 from its first moment, whatever netd's umask), then give it
    ``group`` (when that group exists) and ``mode``."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    umask = os.umask(0o077)
    try:
        await site.start()
    finally:
        os.umask(umask)
    if group:
        with contextlib.suppress(KeyError, PermissionError):
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
    os.chmod(path, mode)
