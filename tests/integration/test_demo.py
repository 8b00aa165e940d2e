"""Issue 12 item 11: `make demo` shows what the Docker guide leads with (failed on main: no name, no port, and
the links line printed flags and MACs as names)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "demo" / "demo.py"


def test_demo_shows_names_a_published_port_and_the_right_columns() -> None:
    r = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=300, check=False)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    assert "links now: ['lo', 'uplink']" in out
    assert out.count("web:80:10.255.0.2:hello") == 2  # the published port, before and after the reboot
    assert "dig +short @172.30.0.1 db\n172.30.0.20\n" in out
    assert "state.json.journal (journal" in out
