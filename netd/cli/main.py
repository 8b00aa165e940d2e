"""netd-ctl: the command-line client of netd, speaking Docker's ``docker network`` language.

Each command is a *builder* (parsed arguments -> HTTP requests, pure and testable through
:func:`build_requests`) and a *renderer* (answers -> text on stdout).  Exit codes:

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

from netd.cli import client, completion, render
from netd.cli import ops as cli_ops
from netd.cli.publish import PublishSpecError, parse_publish

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    Request = tuple[str, str, Any]
    Builder = Callable[[argparse.Namespace], list[Request]]
    Renderer = Callable[[argparse.Namespace, list[tuple[int, Any]]], "str | None"]

PROG = "netd-ctl"
DEFAULT_SOCKET = "/run/netd/netd.sock"

EXIT_OK = 0
EXIT_API_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A combination of arguments argparse cannot check; reported like an argparse error (exit 2)."""


# --- argument types (argparse reports their errors naming the option) -------------------------------------


def _key_value(what: str, *, value_required: bool) -> Callable[[str], tuple[str, str]]:
    def parse(text: str) -> tuple[str, str]:
        key, eq, value = text.partition("=")
        if not key or (value_required and not eq):
            raise argparse.ArgumentTypeError(f'"{text}" is not {what}=VALUE')
        return key, value

    return parse


def _publish(text: str) -> list[dict[str, Any]]:
    try:
        return parse_publish(text)
    except PublishSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- builders: arguments -> requests -----------------------------------------------------------------------


def _q(name: str) -> str:
    return client.quote(name)


def build_status(args: argparse.Namespace) -> list[Request]:
    return [("GET", "/v1/status", None)]


def build_network_create(args: argparse.Namespace) -> list[Request]:
    body: dict[str, Any] = {
        "Name": args.name,
        "Driver": args.driver,
        "Internal": args.internal,
        "EnableIPv6": args.ipv6,
        "IPAM": {
            "Driver": "default",
            "Config": ipam_configs(args.subnet, args.gateway, args.ip_range, args.aux_address),
        },
        "Options": dict(args.opt),
        "Labels": dict(args.label),
    }
    return [("POST", "/v1/networks", body)]


def ipam_configs(
    subnets: list[str], gateways: list[str], ranges: list[str], aux: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Docker's ``consolidateIpam``: each gateway, ip-range and aux-address goes to the subnet containing it.

    Values that do not parse as addresses/CIDRs are paired by position instead, so the daemon (which owns
    validation) reports them with its own message.
    """
    import ipaddress

    if len(gateways) > len(subnets) or len(ranges) > len(subnets):
        raise UsageError("every --ip-range or --gateway must have a corresponding --subnet")
    if aux and not subnets:
        raise UsageError("--aux-address needs a --subnet that contains it")
    configs: list[dict[str, Any]] = [{"Subnet": s} for s in subnets]
    try:
        nets = [ipaddress.ip_network(s, strict=False) for s in subnets]
    except ValueError:
        nets = []
    for i, net in enumerate(nets):
        for other in nets[:i]:
            if net.version == other.version and net.overlaps(other):
                raise UsageError(f"subnets {other} and {net} overlap")

    def owner(value: str, what: str, is_range: bool) -> int | None:
        """Index of the subnet containing ``value``; None when it does not parse (pair by position)."""
        if not nets:
            return None
        try:
            if is_range:
                rng = ipaddress.ip_network(value, strict=False)
                found = [i for i, n in enumerate(nets) if n.version == rng.version and rng.subnet_of(n)]  # type: ignore[arg-type]
            else:
                addr = ipaddress.ip_address(value)
                found = [i for i, n in enumerate(nets) if addr in n]
        except ValueError:
            return None
        if not found:
            raise UsageError(f"no matching subnet for {what} {value}")
        return found[0]

    for key, what, values, is_range in (
        ("Gateway", "gateway", gateways, False),
        ("IPRange", "ip-range", ranges, True),
    ):
        for index, value in enumerate(values):
            target = owner(value, what, is_range)
            config = configs[index if target is None else target]
            if key in config:
                subnet = config["Subnet"]
                raise UsageError(f"cannot configure multiple {what}s ({config[key]}, {value}) for subnet {subnet}")
            config[key] = value
    for name, value in aux:
        target = owner(value, "aux-address", is_range=False)
        configs[0 if target is None else target].setdefault("AuxiliaryAddresses", {})[name] = value
    return configs


def build_network_ls(args: argparse.Namespace) -> list[Request]:
    return [("GET", "/v1/networks", None)]


def build_network_inspect(args: argparse.Namespace) -> list[Request]:
    return [("GET", f"/v1/networks/{_q(name)}", None) for name in args.names]


def build_network_rm(args: argparse.Namespace) -> list[Request]:
    return [("DELETE", f"/v1/networks/{_q(name)}", None) for name in args.names]


def _netns_ref(args: argparse.Namespace) -> dict[str, str]:
    if args.netns is not None and args.netns_path is not None:
        raise UsageError("give either NETNS or --netns-path, not both")
    if args.netns is not None:
        return {"Netns": args.netns}
    if args.netns_path is not None:
        return {"NetnsPath": args.netns_path}
    raise UsageError("a network namespace is required: give NETNS or --netns-path PATH")


def build_network_connect(args: argparse.Namespace) -> list[Request]:
    body: dict[str, Any] = _netns_ref(args)
    endpoint: dict[str, Any] = {}
    ipam = {key: value for key, value in (("IPv4Address", args.ip), ("IPv6Address", args.ip6)) if value}
    if ipam:
        endpoint["IPAMConfig"] = ipam
    endpoint["Aliases"] = list(args.alias)
    body["EndpointConfig"] = endpoint
    body["Ports"] = [entry for entries in args.publish for entry in entries]
    return [("POST", f"/v1/networks/{_q(args.network)}/connect", body)]


def build_network_disconnect(args: argparse.Namespace) -> list[Request]:
    return [("POST", f"/v1/networks/{_q(args.network)}/disconnect", _netns_ref(args))]


def build_netns_create(args: argparse.Namespace) -> list[Request]:
    return [("POST", "/v1/netns", {"Name": args.name})]


def build_netns_ls(args: argparse.Namespace) -> list[Request]:
    return [("GET", "/v1/netns", None)]


def build_netns_rm(args: argparse.Namespace) -> list[Request]:
    return [("DELETE", f"/v1/netns/{_q(name)}", None) for name in args.names]


def build_reconcile(args: argparse.Namespace) -> list[Request]:
    return [("POST", "/v1/reconcile", None)]


def build_port(args: argparse.Namespace) -> list[Request]:
    return [("GET", f"/v1/netns/{_q(args.netns)}", None)]


# --- renderers: answers -> stdout text ---------------------------------------------------------------------


def render_status(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    status = results[0][1]
    if args.format == "json" or not isinstance(status, dict):
        return render.to_json(status)
    return render.key_values(status)


def render_created_network(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    answer = results[0][1]
    if isinstance(answer, dict) and answer.get("Id"):
        return str(answer["Id"])
    return render.to_json(answer)


def render_network_ls(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    networks = [n for n in results[0][1] or [] if isinstance(n, dict)]
    if args.format == "json":
        return render.to_json(networks)
    if args.quiet:
        return render.network_ids(networks, args.no_trunc)
    return render.network_table(networks, args.no_trunc)


def render_inspect(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    return render.to_json([answer for _, answer in results])


def render_names(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str | None:
    return "\n".join(args.names[index] for index, _ in results) or None


def render_name(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    return str(args.name)


def render_json_answer(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str | None:
    answer = results[0][1]
    return None if answer is None else render.to_json(answer)


def render_nothing(args: argparse.Namespace, results: list[tuple[int, Any]]) -> None:
    return None


def render_netns_ls(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    namespaces = [ns for ns in results[0][1] or [] if isinstance(ns, dict)]
    if args.format == "json":
        return render.to_json(namespaces)
    return render.netns_table(namespaces)


def render_reconcile(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    answer = results[0][1]
    if isinstance(answer, dict) and "changes" in answer:
        return str(answer["changes"])
    return render.to_json(answer)


def render_port(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str | None:
    answer = results[0][1]
    if not isinstance(answer, dict):
        return None
    port, proto = None, None
    if args.port is not None:
        port, proto = args.port
    return "\n".join(render.port_lines(answer, port, proto)) or None


def _private_port(text: str) -> tuple[int, str | None]:
    number, slash, proto = text.partition("/")
    if not number.isdigit() or not 1 <= int(number) <= 65535 or (slash and proto not in ("tcp", "udp", "sctp")):
        raise argparse.ArgumentTypeError(f'"{text}" is not PORT[/tcp|udp|sctp]')
    return int(number), proto or None


# --- the argument tree -------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    # --socket is accepted before and after the command; SUPPRESS keeps a sub-command from resetting it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=_Formatter,
        description="Control netd: Docker-style networks and network namespaces without Docker.",
        epilog="exit status: 0 ok, 1 rejected by netd, 2 usage error, 3 netd not reachable",
    )
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=f"netd's API socket (env NETD_SOCKET, default {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=float, default=client.DEFAULT_TIMEOUT, help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_text: str,
        build: Builder,
        render_fn: Renderer,
        *,
        aliases: Sequence[str] = (),
        keep_going: bool = False,
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(
            name,
            aliases=list(aliases),
            help=help_text,
            description=help_text,
            parents=[common],
            formatter_class=_Formatter,
        )
        sub.set_defaults(build=build, render=render_fn, cmd_parser=sub, keep_going=keep_going)
        sub.epilog = cli_ops.EXAMPLES.get(sub.prog)
        return sub

    def add_format(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--format", choices=["json"], help="json: print the daemon's answer as JSON")

    p = command(
        commands,
        "status",
        "Show the daemon's health, counts, firewall backend and last reconcile",
        build_status,
        cli_ops.render_status,
    )
    add_format(p)

    # network ...
    network = commands.add_parser(
        "network", help="Manage networks", description="Manage networks", formatter_class=_Formatter
    )
    net_cmds = network.add_subparsers(dest="network_command", metavar="COMMAND", required=True)

    p = command(net_cmds, "create", "Create a network", build_network_create, render_created_network)
    p.add_argument("-d", "--driver", default="bridge", help="driver to manage the network (default %(default)s)")
    p.add_argument("--subnet", action="append", default=[], metavar="CIDR", help="subnet in CIDR format")
    p.add_argument(
        "--gateway", action="append", default=[], metavar="IP", help="IPv4 or IPv6 gateway for a subnet"
    )
    p.add_argument(
        "--ip-range",
        action="append",
        default=[],
        metavar="CIDR",
        help="allocate container addresses from a sub-range",
    )
    p.add_argument(
        "--aux-address",
        action="append",
        default=[],
        metavar="NAME=IP",
        type=_key_value("NAME", value_required=True),
        help="auxiliary address the IPAM driver must not hand out",
    )
    p.add_argument("--internal", action="store_true", help="restrict external access to the network")
    p.add_argument("--ipv6", action="store_true", help="enable IPv6 networking")
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_key_value("KEY", value_required=True),
        help="driver option, e.g. com.docker.network.bridge.name=br0, parent=eth0, macvlan_mode=bridge",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        type=_key_value("KEY", value_required=False),
        help="metadata on the network",
    )
    p.add_argument("name", metavar="NAME")

    p = command(net_cmds, "ls", "List networks", build_network_ls, render_network_ls, aliases=["list"])
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    add_format(p)

    p = command(
        net_cmds,
        "inspect",
        "Display detailed information on one or more networks",
        build_network_inspect,
        render_inspect,
        keep_going=True,
    )
    p.add_argument("names", metavar="NETWORK", nargs="+")

    p = command(
        net_cmds,
        "rm",
        "Remove one or more networks",
        build_network_rm,
        render_names,
        aliases=["remove"],
        keep_going=True,
    )
    p.add_argument("names", metavar="NETWORK", nargs="+")

    p = command(
        net_cmds, "connect", "Connect a network namespace to a network", build_network_connect, render_json_answer
    )
    p.add_argument("--ip", metavar="IP", help="IPv4 address (e.g. 172.30.100.104)")
    p.add_argument("--ip6", metavar="IP", help="IPv6 address (e.g. 2001:db8::33)")
    p.add_argument("--alias", action="append", default=[], metavar="NAME", help="network-scoped DNS alias")
    p.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="SPEC",
        type=_publish,
        help="publish a port: [ip:]host:container[/proto], ranges host-host:cont-cont, or container[/proto]",
    )
    p.add_argument(
        "--netns-path", metavar="PATH", help="namespace given by path (e.g. /proc/PID/ns/net) instead of NETNS"
    )
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("netns", metavar="NETNS", nargs="?", help="a namespace named with `netd-ctl netns create`")

    p = command(
        net_cmds,
        "disconnect",
        "Disconnect a network namespace from a network",
        build_network_disconnect,
        render_nothing,
    )
    p.add_argument("--netns-path", metavar="PATH", help="namespace given by path instead of NETNS")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("netns", metavar="NETNS", nargs="?")

    # netns ...
    netns = commands.add_parser(
        "netns",
        help="Manage network namespaces owned by netd",
        description="Manage network namespaces owned by netd",
        formatter_class=_Formatter,
    )
    ns_cmds = netns.add_subparsers(dest="netns_command", metavar="COMMAND", required=True)
    p = command(
        ns_cmds, "create", "Create a named network namespace (recreated at boot)", build_netns_create, render_name
    )
    p.add_argument("name", metavar="NAME")
    p = command(ns_cmds, "ls", "List network namespaces", build_netns_ls, render_netns_ls, aliases=["list"])
    add_format(p)
    p = command(
        ns_cmds,
        "rm",
        "Remove one or more network namespaces",
        build_netns_rm,
        render_names,
        aliases=["remove"],
        keep_going=True,
    )
    p.add_argument("names", metavar="NAME", nargs="+")

    command(
        commands,
        "reconcile",
        "Reconcile now; prints the number of changes made",
        build_reconcile,
        render_reconcile,
    )

    p = command(commands, "port", "List port mappings of a network namespace", build_port, render_port)
    p.add_argument("netns", metavar="NETNS")
    p.add_argument("port", metavar="PRIVATE_PORT[/PROTO]", nargs="?", type=_private_port)
    cli_ops.add_commands(commands, command, add_format)
    p = command(commands, "completion", "Print a shell completion script", _no_requests, render_nothing)
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(local=lambda args: completion.script(parser, args.shell))
    return parser


def _no_requests(args: argparse.Namespace) -> list[Request]:
    return []


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
