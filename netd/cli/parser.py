"""netd-ctl's argument tree: every command, its options and its builder and renderer
(``netd.cli.commands``).  Stdlib only."""

from __future__ import annotations

import argparse

from netd.cli import client, completion, docker_words
from netd.cli import ops as cli_ops
from netd.cli import service as cli_service
from netd.cli.commands import (
    build_netns_create,
    build_netns_ls,
    build_netns_rm,
    build_network_connect,
    build_network_create,
    build_network_disconnect,
    build_network_inspect,
    build_network_ls,
    build_network_rm,
    build_network_rotate_key,
    build_node_inspect,
    build_node_ls,
    build_node_rm,
    build_port,
    build_reconcile,
    build_status,
    key_value_arg,
    private_port_arg,
    publish_arg,
    render_created_network,
    render_inspect,
    render_json_answer,
    render_name,
    render_names,
    render_netns_ls,
    render_netns_rm,
    render_network_ls,
    render_node_ls,
    render_nothing,
    render_port,
    render_reconcile,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    Request = tuple[str, str, Any]
    Builder = Callable[[argparse.Namespace], list[Request]]
    Renderer = Callable[[argparse.Namespace, list[tuple[int, Any]]], "str | None"]

PROG = "netd-ctl"
DEFAULT_SOCKET = "/run/netd/netd.sock"


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
        sub.epilog = cli_ops.EXAMPLES.get(sub.prog) or cli_service.EXAMPLES.get(sub.prog)
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
        type=key_value_arg("NAME", value_required=True),
        help="auxiliary address the IPAM driver must not hand out",
    )
    p.add_argument("--internal", action="store_true", help="restrict external access to the network")
    p.add_argument(
        "--attachable", action="store_true", help="overlay: let plain namespaces connect (not only services)"
    )
    p.add_argument(
        "--ingress",
        action="store_true",
        help="overlay: the routing-mesh network of services' published ports (one per cluster)",
    )
    p.add_argument("--ipv6", action="store_true", help="enable IPv6 networking")
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=key_value_arg("KEY", value_required=True, flags=("encrypted",)),
        help="driver option, e.g. com.docker.network.bridge.name=br0, parent=eth0, macvlan_mode=bridge; "
        "overlay: encrypted (IPsec ESP between nodes)",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        type=key_value_arg("KEY", value_required=False),
        help="metadata on the network",
    )
    p.add_argument("name", metavar="NAME")

    p = command(net_cmds, "ls", "List networks", build_network_ls, render_network_ls, aliases=["list"])
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    docker_words.add_ls_filter(p)
    add_format(p)
    docker_words.add_prune(net_cmds, command)

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
    p.add_argument(
        "-f", "--force", action="store_true", help="disconnect its endpoints first (all at once), then remove it"
    )
    p.add_argument("names", metavar="NETWORK", nargs="+")

    p = command(
        net_cmds,
        "rotate-key",
        "Rotate an encrypted overlay network's key now (waits until every node switched)",
        build_network_rotate_key,
        render_json_answer,
    )
    p.add_argument(
        "--wait",
        type=float,
        default=50.0,
        metavar="SECONDS",
        help="wait this long for every node to switch (default %(default)g; the rotation goes on after it)",
    )
    p.add_argument("name", metavar="NETWORK")

    p = command(
        net_cmds, "connect", "Connect a network namespace to a network", build_network_connect, render_json_answer
    )
    p.add_argument("--ip", metavar="IP", help="IPv4 address (e.g. 172.30.100.104)")
    p.add_argument("--ip6", metavar="IP", help="IPv6 address (e.g. 2001:db8::33)")
    p.add_argument("--alias", action="append", default=[], metavar="NAME", help="network-scoped DNS alias")
    p.add_argument(
        "--link", action="append", default=[], metavar="NAME:ALIAS", help="legacy link to a netns (default bridge)"
    )
    p.add_argument(
        "--gw-priority",
        type=int,
        default=None,
        metavar="N",
        help="the namespace's network with the highest priority carries its default route (default 0; ties: "
        "the first connected), as Docker's --gw-priority",
    )
    p.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="SPEC",
        type=publish_arg,
        help="publish a port: [ip:]host:container[/proto], ranges host-host:cont-cont, or container[/proto]",
    )
    docker_words.add_expose(p)
    p.add_argument(
        "--netns-path", metavar="PATH", help="namespace given by path (e.g. /proc/PID/ns/net) instead of NETNS"
    )
    p.add_argument("--service", metavar="NAME", help="overlay: join as a task of service NAME (cluster mode)")
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
    p.add_argument(
        "--network",
        choices=["none", "host"],
        help="none: a namespace with only lo; host: a name for the host's own namespace (both refuse connects)",
    )
    p.add_argument("name", metavar="NAME")
    p = command(ns_cmds, "ls", "List network namespaces", build_netns_ls, render_netns_ls, aliases=["list"])
    add_format(p)
    p = command(
        ns_cmds,
        "rm",
        "Remove one or more network namespaces",
        build_netns_rm,
        render_netns_rm,
        aliases=["remove"],
        keep_going=True,
    )
    p.add_argument("names", metavar="NAME", nargs="+")

    # node ... (cluster mode)
    node = commands.add_parser(
        "node",
        help="Nodes of the cluster (overlay networks)",
        description="Nodes of the cluster",
        formatter_class=_Formatter,
    )
    node_cmds = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    p = command(
        node_cmds,
        "ls",
        "List the cluster's nodes (name, address, state, endpoints, last seen)",
        build_node_ls,
        render_node_ls,
        aliases=["list"],
    )
    add_format(p)
    p = command(
        node_cmds, "inspect", "Show one or more nodes", build_node_inspect, render_inspect, keep_going=True
    )
    p.add_argument("names", metavar="NODE", nargs="+")
    p = command(
        node_cmds,
        "rm",
        "Forget a node that is gone for good (refused while it is alive); frees its addresses",
        build_node_rm,
        render_names,
        aliases=["remove"],
        keep_going=True,
    )
    p.add_argument("names", metavar="NODE", nargs="+")

    cli_service.add_commands(commands, command, add_format, render_inspect, render_names)

    command(
        commands,
        "reconcile",
        "Reconcile now; prints the number of changes made",
        build_reconcile,
        render_reconcile,
    )

    p = command(commands, "port", "List port mappings of a network namespace", build_port, render_port)
    p.add_argument("netns", metavar="NETNS")
    p.add_argument("port", metavar="PRIVATE_PORT[/PROTO]", nargs="?", type=private_port_arg)
    cli_ops.add_commands(commands, command, add_format)
    p = command(commands, "completion", "Print a shell completion script", _no_requests, render_nothing)
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(local=lambda args: completion.script(parser, args.shell))
    return parser


def _no_requests(args: argparse.Namespace) -> list[Request]:
    return []
