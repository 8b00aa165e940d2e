"""``netd-ctl network ls --filter`` and ``network prune``: Docker's words for listing and cleaning networks.

Stdlib only."""

from __future__ import annotations

import argparse
import json
import sys

from netd.cli import client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Request = tuple[str, str, Any]
FILTER_KEYS = ("dangling", "driver", "id", "label", "name", "scope", "type")  # netd.core.netfilters.LIST_KEYS


def filter_arg(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or key not in FILTER_KEYS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)} (e.g. driver=bridge)"
        )
    return key, value


def filters_query(filters: list[tuple[str, str]]) -> str:
    """Docker's ``?filters={"driver":["bridge"]}``: values of one key are OR'ed, keys AND'ed (by the daemon)."""
    if not filters:
        return ""
    grouped: dict[str, list[str]] = {}
    for key, value in filters:
        grouped.setdefault(key, []).append(value)
    return "?filters=" + client.quote(json.dumps(grouped, separators=(",", ":")))


def add_ls_filter(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        type=filter_arg,
        metavar="KEY=VALUE",
        help="driver=, name= (part of the name), id= (prefix), label=KEY[=VALUE], type=builtin|custom; repeatable",
    )


def build_prune(args: argparse.Namespace) -> list[Request]:
    if not args.force:
        sys.stderr.write(
            "WARNING! This will remove all custom networks without endpoints.\n"
            "Are you sure you want to continue? [y/N] "
        )
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise SystemExit(1)
    return [("POST", "/v1/networks/prune", None)]


def render_prune(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str | None:
    answer = results[0][1]
    deleted = answer.get("NetworksDeleted") if isinstance(answer, dict) else None
    if not deleted:
        return None
    return "Deleted Networks:\n" + "\n".join(str(n) for n in deleted)


def add_prune(net_cmds: Any, command: Any) -> None:
    p = command(net_cmds, "prune", "Remove all networks without endpoints", build_prune, render_prune)
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")


def add_expose(p: argparse.ArgumentParser) -> None:
    """``--expose PORT[/PROTO]`` (or a range) and ``-P``: publish every exposed port on a free host port."""
    p.add_argument(
        "--expose",
        action="append",
        default=[],
        metavar="PORT[/PROTO]",
        help="expose a port or range (8000-8010)",
    )
    p.add_argument(
        "-P",
        "--publish-all",
        action="store_true",
        help="publish all exposed ports on free host ports (published_port_range)",
    )
