"""Markers of the named netns netd created (one empty file per name): what lets a later reconcile remove a
netns it made and leave any other alone."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path


def owned_netns(owned_dir: Path, names: Collection[str] | None = None) -> set[str]:
    """The marked names (all, or those of ``names``: no directory listing for a scoped reconcile)."""
    if names is not None:
        return {n for n in names if (owned_dir / n).exists()}
    try:
        return set(os.listdir(owned_dir))
    except FileNotFoundError:
        return set()


def mark_netns(owned_dir: Path, name: str, owned: bool) -> None:
    marker = owned_dir / name
    if owned:
        owned_dir.mkdir(parents=True, exist_ok=True)
        marker.touch()
    else:
        marker.unlink(missing_ok=True)
