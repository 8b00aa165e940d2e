"""netd-ctl and the CNI plugin import only the standard library (and netd.cli): checked with -X importtime."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _imported(code: str) -> set[str]:
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("import time:") and "imported package" not in ln]
    return {ln.split("|")[-1].strip() for ln in lines}


@pytest.mark.parametrize("module", ["netd.cli.main", "netd.cli.cni", "netd.cli.cni_check"])
def test_imports_only_the_standard_library(module: str) -> None:
    names = _imported(f"import {module}") - _imported("pass")  # what the interpreter's start-up loads is not ours
    foreign = sorted(
        n for n in names if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "netd"
    )
    assert foreign == [], f"{module} imports {foreign}"
    daemon_side = sorted(n for n in names if n.startswith("netd.") and not n.startswith("netd.cli"))
    assert daemon_side == [], f"{module} imports {daemon_side}"
