"""netd-ctl: the command-line client of netd, speaking Docker's ``docker network`` language.

Each command is a *builder* (parsed arguments -> HTTP requests, pure and testable through
:func:`build_requests`) and a *renderer* (answers -> text on stdout), both in ``netd.cli.commands``; the
argument tree is ``netd.cli.parser``.  Exit codes:

    0  success
    1  the daemon rejected the request (HTTP 4xx/5xx; its ``error.message`` is printed)
    2  usage error (argparse, a bad ``-p``/``-o`` value, NETNS and --netns-path both or neither)
    3  netd cannot be reached, or its answer is not valid HTTP/JSON
  130  interrupted (Ctrl-C)

Only stdlib modules are imported, and none of the other ``netd.*`` modules: ``netd-ctl status`` must start fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from netd.cli import client
from netd.cli.commands import UsageError
from netd.cli.parser import DEFAULT_SOCKET, PROG, build_parser

__all__ = ["DEFAULT_SOCKET", "PROG", "build_request", "build_requests", "main", "parse_args", "socket_path"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    Request = tuple[str, str, Any]
    Builder = Callable[[argparse.Namespace], list[Request]]
    Renderer = Callable[[argparse.Namespace, list[tuple[int, Any]]], "str | None"]


EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _build(args: argparse.Namespace) -> list[Request]:
    builder: Builder = args.build
    try:
        return builder(args)
    except UsageError as exc:
        args.cmd_parser.error(str(exc))  # exits with status 2
        raise  # unreachable: error() exits


def build_requests(argv: Sequence[str]) -> list[Request]:
    """The ``(method, path, body)`` requests a command line sends, without a server. Usage errors exit 2."""
    return _build(parse_args(argv))


def build_request(argv: Sequence[str]) -> Request:
    """The single request of a one-request command line (tests and debugging)."""
    requests = build_requests(argv)
    if len(requests) != 1:
        raise ValueError(f"{' '.join(argv)!r} sends {len(requests)} requests")
    return requests[0]


def socket_path(args: argparse.Namespace) -> str:
    return str(args.socket or os.environ.get("NETD_SOCKET") or DEFAULT_SOCKET)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if getattr(args, "local", None) is not None:  # answered without the daemon (completion)
        sys.stdout.write(args.local(args))
        return EXIT_OK
    requests = _build(args)
    path = socket_path(args)
    results: list[tuple[int, Any]] = []
    status = EXIT_OK
    try:
        for index, (method, url, body) in enumerate(requests):
            try:
                results.append((index, client.call(path, method, url, body, timeout=args.timeout)))
            except client.ApiError as exc:
                _error(exc.message)
                status = EXIT_API_ERROR
                if not args.keep_going:
                    return status
        renderer: Renderer = args.render
        output = renderer(args, results) if results else None
        if output:
            sys.stdout.write(output + "\n")
            sys.stdout.flush()
        status = status or getattr(args, "exit_status", EXIT_OK)  # check/doctor: 1 when something is wrong
    except client.ClientError as exc:  # ConnectError, ProtocolError
        _error(str(exc))
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `netd-ctl network ls | head -1`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return status
    return status


def _error(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
