"""[metrics] listen forms and token_file (the listener itself is tested in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from netd.core.config import Metrics


def test_listen_forms() -> None:
    assert Metrics().address == ("127.0.0.1", 9465) and Metrics().unix_path is None
    m = Metrics(listen="unix:/run/netd/metrics.sock")
    assert m.unix_path == Path("/run/netd/metrics.sock") and m.address is None
    assert Metrics(listen="[::1]:9465").address == ("::1", 9465)
    off = Metrics(listen="")
    assert off.address is None and off.unix_path is None


@pytest.mark.parametrize("bad", ["unix:metrics.sock", "unix:", "localhost", "127.0.0.1:99999"])
def test_bad_listen_says_what_is_accepted(bad: str) -> None:
    with pytest.raises(ValidationError, match="unix:/"):
        Metrics(listen=bad)


def test_token_file() -> None:
    assert Metrics(token_file=Path("/etc/netd/metrics.token")).token_file == Path("/etc/netd/metrics.token")
    assert Metrics().token_file is None
