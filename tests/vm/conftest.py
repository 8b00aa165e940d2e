"""The VM tier: what this machine's kernel lacks (ipvlan, 802.1q, dummy) under a Debian kernel.

Run through ``make vm-test`` (``../shared/vmtest/run-in-vm``).  Python is 10-30x slower there: one daemon per
module, few focused tests.  A missing kernel feature fails the test; nothing here skips.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("VM tests need root: run them with make vm-test")
