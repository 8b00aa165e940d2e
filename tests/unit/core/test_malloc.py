"""netd.ops.malloc on this machine's glibc (Debian): the settings are taken, and trimming is safe to call."""

from __future__ import annotations

import pytest

from netd.ops import malloc


def test_glibc_takes_the_fixed_mmap_threshold() -> None:
    assert malloc.tune() is True
    malloc.trim()


def test_a_libc_without_mallopt_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(malloc, "_LIBC", None)
    assert malloc.tune() is False
    malloc.trim()  # a no-op, not an error
