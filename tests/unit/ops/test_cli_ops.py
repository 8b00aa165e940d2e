"""netd-ctl status/plan/check/doctor rendering, exit codes, help examples and completion (no daemon)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from netd.cli import completion
from netd.cli import ops as cli_ops
from netd.cli.main import build_parser, build_request

STATUS = {
    "version": "0.1.0",
    "pid": 42,
    "uptime_s": 3725,
    "ready": True,
    "config": "/etc/netd/netd.toml",
    "state_file": "/var/lib/netd/state.json",
    "networks": 2,
    "endpoints": 5,
    "netns": 3,
    "firewall": {"backend": "nftables", "reason": "auto: nftables"},
    "reconcile": {
        "runs": 9,
        "last": "2026-05-09T07:35:25+0000",
        "last_reason": "timer",
        "last_ms": 4.2,
        "last_changes": 0,
        "changes": 12,
        "repairs": 1,
        "firewall_repairs": 1,
        "in_sync": True,
    },
    "drift": {},
    "metrics": "127.0.0.1:9465",
    "degraded": [],
}


def _args(fmt: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(format=fmt)


def test_requests() -> None:
    assert build_request(["plan"]) == ("GET", "/v1/plan", None)
    assert build_request(["check", "--format", "json"]) == ("GET", "/v1/check", None)
    assert build_request(["doctor"]) == ("GET", "/v1/doctor", None)


def test_status_text() -> None:
    out = cli_ops.render_status(_args(), [(0, STATUS)])
    assert out.splitlines()[0] == "netd 0.1.0 (pid 42), up 1h02m, ready"
    assert "objects:    2 networks, 5 endpoints, 3 netns" in out and "health:     ok" in out
    degraded = {**STATUS, "degraded": ["starting"], "drift": {"n1": "boom"}}
    out = cli_ops.render_status(_args(), [(0, degraded)])
    assert "health:     DEGRADED" in out and "  - starting" in out and "failing:  n1: boom" in out


def test_check_and_doctor_set_the_exit_status() -> None:
    a = _args()
    assert cli_ops.render_check(a, [(0, {"in_sync": True, "differences": []})]).startswith("in sync")
    assert getattr(a, "exit_status", 0) == 0
    diff = {"action": "EnsureBridge", "owner": "n", "description": "ensure bridge br-x (missing)"}
    out = cli_ops.render_check(a, [(0, {"in_sync": False, "differences": [diff]})])
    assert a.exit_status == 1 and "ensure bridge br-x (missing)" in out
    b = _args()
    finding = {"check": "mtu", "status": "warn", "message": "too big", "fix": "lower it"}
    out = cli_ops.render_doctor(b, [(0, {"status": "warn", "findings": [finding]})])
    assert b.exit_status == 1 and "[WARN] mtu: too big" in out and "fix: lower it" in out


def test_every_command_has_an_example_in_its_help() -> None:
    parser = build_parser()
    missing = []
    for path, _ in completion.walk(parser):
        node = parser
        for word in path.split():
            node = completion._subparsers(node)[word]
        if path and not completion._subparsers(node) and "example" not in (node.epilog or ""):
            missing.append(path)
    assert missing == []


def test_completion_scripts() -> None:
    bash = completion.script(build_parser(), "bash")
    assert '"network connect") words="' in bash and "doctor" in bash and "netd-ctl netns ls" in bash
    r = subprocess.run(["bash", "-n"], input=bash, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert completion.script(build_parser(), "zsh").startswith("#compdef netd-ctl")


def test_cli_imports_nothing_heavy() -> None:
    code = (
        "import sys, netd.cli.main; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pyroute2', 'aiohttp', 'structlog', "
        "'prometheus_client') or (m.startswith('netd.') and not m.startswith('netd.cli'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
