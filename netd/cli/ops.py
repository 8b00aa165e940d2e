"""netd-ctl's operator commands: ``status``, ``plan``, ``check``, ``doctor`` (builders and renderers).

Exit codes beyond main's: ``check`` exits 1 when the kernel differs from the desired state, ``doctor`` exits 1
when a check warns or fails (for monitoring scripts).  Stdlib only.
"""

from __future__ import annotations

import argparse

from netd.cli import render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Request = tuple[str, str, Any]

EXIT_DIFFERENT = 1


def build_plan(args: argparse.Namespace) -> list[Request]:
    return [("GET", "/v1/plan", None)]


def build_check(args: argparse.Namespace) -> list[Request]:
    return [("GET", "/v1/check", None)]


def build_doctor(args: argparse.Namespace) -> list[Request]:
    return [("GET", "/v1/doctor", None)]


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{s:02d}s" if minutes else f"{s}s"


def status_text(st: dict[str, Any]) -> str:
    rec = st.get("reconcile") or {}
    fw = st.get("firewall") or {}
    degraded = st.get("degraded") or []
    state = "ready" if st.get("ready") else "starting"
    lines = [
        f"netd {st.get('version', '?')} (pid {st.get('pid', '?')}), up {_duration(float(st.get('uptime_s', 0)))}, "
        f"{state}",
        f"config:     {st.get('config', '-')}",
        f"state:      {st.get('state_file', '-')}",
        f"firewall:   {fw.get('backend', '-')} ({fw.get('reason', '')})",
        f"objects:    {st.get('networks', 0)} networks, {st.get('endpoints', 0)} endpoints, "
        f"{st.get('netns', 0)} netns",
        f"reconcile:  last {rec.get('last') or 'never'} ({rec.get('last_reason', '-')}), "
        f"{rec.get('last_ms', 0)} ms, {rec.get('last_changes', 0)} changes; {rec.get('runs', 0)} runs, "
        f"{rec.get('changes', 0)} changes total",
        f"drift:      {rec.get('repairs', 0)} repairs ({rec.get('firewall_repairs', 0)} firewall), "
        + ("in sync" if rec.get("in_sync", True) else f"{len(st.get('drift') or {})} object(s) failing"),
        f"metrics:    {st.get('metrics', '-')}",
    ]
    if st.get("netns_mounts"):
        lines.append(f"netns:      {st['netns_mounts']}")
    for owner, error in sorted((st.get("drift") or {}).items()):
        lines.append(f"  failing:  {owner}: {error}")
    lines.append("health:     " + ("ok" if not degraded else "DEGRADED"))
    lines += [f"  - {d}" for d in degraded]
    return "\n".join(lines)


def render_status(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    status = results[0][1]
    if args.format == "json" or not isinstance(status, dict):
        return render.to_json(status)
    if "uptime_s" not in status:  # an older daemon: show whatever it sent, flattened
        return render.key_values(status)
    return status_text(status)


def _actions_text(actions: list[dict[str, Any]], empty: str) -> str:
    if not actions:
        return empty
    return "\n".join(f"{a.get('action', '?'):<15} {a.get('description', '')}" for a in actions)


def render_plan(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    answer = results[0][1] or {}
    if args.format == "json":
        return render.to_json(answer)
    actions = answer.get("actions") or []
    head = f"{len(actions)} change(s) a reconcile would make now (netd-ctl reconcile applies them):\n"
    return (
        _actions_text(actions, "nothing to do: the kernel matches the desired state")
        if not actions
        else (head + _actions_text(actions, ""))
    )


def render_check(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    answer = results[0][1] or {}
    diffs = answer.get("differences") or []
    if diffs:
        args.exit_status = EXIT_DIFFERENT
    if args.format == "json":
        return render.to_json(answer)
    if not diffs:
        return "in sync: the kernel matches the desired state"
    return f"{len(diffs)} difference(s) between the kernel and the desired state:\n" + _actions_text(diffs, "")


_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def render_doctor(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    answer = results[0][1] or {}
    findings = answer.get("findings") or []
    if any(f.get("status") != "ok" for f in findings):
        args.exit_status = EXIT_DIFFERENT
    if args.format == "json":
        return render.to_json(answer)
    lines = []
    for f in findings:
        lines.append(f"[{_MARK.get(f.get('status', ''), '?')}] {f.get('check')}: {f.get('message')}")
        if f.get("fix") and f.get("status") != "ok":
            lines.append(f"       fix: {f['fix']}")
    problems = sum(1 for f in findings if f.get("status") != "ok")
    lines.append("no problems found" if not problems else f"{problems} problem(s) found")
    return "\n".join(lines)


def build_reload(args: argparse.Namespace) -> list[Request]:
    return [("POST", "/v1/reload", None)]


def render_reload(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    """What the reload applied; exit 1 when part of the config is pending or failed (said how to finish)."""
    answer = results[0][1]
    if not isinstance(answer, dict):
        return render.to_json(answer)
    if answer.get("errors") or answer.get("pending"):
        args.exit_status = EXIT_DIFFERENT
    if args.format == "json":
        return render.to_json(answer)
    lines = ["config reloaded" if answer.get("reloaded") else "config NOT reloaded (the running config is kept)"]
    lines += [f"  error:   {e}" for e in answer.get("errors") or []]
    lines += [f"  pending: {p}" for p in answer.get("pending") or []]
    if answer.get("reloaded") and not answer.get("errors") and not answer.get("pending"):
        lines[0] += ": everything applied"
    return "\n".join(lines)


def add_commands(commands: Any, command: Any, add_format: Any) -> None:
    """Register plan / check / doctor on the top-level command group of main's parser."""
    p = command(commands, "plan", "Show what a reconcile would change now (a dry run)", build_plan, render_plan)
    add_format(p)
    p = command(
        commands,
        "check",
        "Compare the kernel with the desired state; exit 1 listing every difference",
        build_check,
        render_check,
    )
    add_format(p)
    p = command(
        commands,
        "doctor",
        "Diagnose common host problems (forwarding, firewalls, rp_filter, overlaps, MTU) with fixes; exit 1 "
        "when something needs attention",
        build_doctor,
        render_doctor,
    )
    add_format(p)
    p = command(
        commands,
        "reload",
        "Re-read the config and apply it (as SIGHUP); say what applied and what waits (exit 1 if anything does)",
        build_reload,
        render_reload,
    )
    add_format(p)


EXAMPLES = {
    "netd-ctl status": "example:\n  netd-ctl status\n  netd-ctl status --format json | jq .reconcile",
    "netd-ctl plan": "example:\n  ip link del br-app      # someone deletes a bridge by hand\n  netd-ctl plan",
    "netd-ctl check": "example:\n  netd-ctl check || echo 'netd: kernel drifted from the desired state'",
    "netd-ctl doctor": "example:\n  netd-ctl doctor\n  netd-ctl doctor --format json",
    "netd-ctl completion": "example:\n  netd-ctl completion bash > /etc/bash_completion.d/netd-ctl\n"
    '  netd-ctl completion zsh > "${fpath[1]}/_netd-ctl"',
    "netd-ctl reconcile": "example:\n  netd-ctl reconcile",
    "netd-ctl reload": "example:\n  vi /etc/netd/netd.toml && netd-ctl reload",
    "netd-ctl port": "example:\n  netd-ctl port web\n  netd-ctl port web 80/tcp",
    "netd-ctl network create": "example:\n  netd-ctl network create my-net\n"
    "  netd-ctl network create --subnet 172.30.0.0/24 --gateway 172.30.0.1 \\\n"
    "      -o com.docker.network.bridge.name=br-app app",
    "netd-ctl network ls": "example:\n  netd-ctl network ls\n  netd-ctl network ls -q\n"
    "  netd-ctl network ls --filter driver=bridge --filter label=env=prod",
    "netd-ctl network inspect": "example:\n  netd-ctl network inspect app",
    "netd-ctl network rm": "example:\n  netd-ctl network rm app",
    "netd-ctl network prune": "example:\n  netd-ctl network prune -f",
    "netd-ctl network connect": "example:\n  netd-ctl network connect --ip 172.30.0.10 --alias www app web\n"
    "  netd-ctl network connect --netns-path /proc/1234/ns/net app",
    "netd-ctl network disconnect": "example:\n  netd-ctl network disconnect app web",
    "netd-ctl network rotate-key": "example:\n  netd-ctl network create -d overlay --opt encrypted sec\n"
    "  netd-ctl network rotate-key sec",
    "netd-ctl netns create": "example:\n  netd-ctl netns create web",
    "netd-ctl netns ls": "example:\n  netd-ctl netns ls",
    "netd-ctl netns rm": "example:\n  netd-ctl netns rm web",
    "netd-ctl node ls": "example:\n  netd-ctl node ls",
    "netd-ctl node inspect": "example:\n  netd-ctl node inspect node2",
    "netd-ctl node rm": "example:\n  netd-ctl node rm node3      # node3 is gone for good: free its addresses",
}
