"""What each netd-ctl command sends and prints: *builders* (parsed arguments -> HTTP requests, pure) and
*renderers* (answers -> text on stdout).  Stdlib only, like the rest of ``netd.cli``."""

from __future__ import annotations

import argparse
import sys

from netd.cli import client, docker_words, render
from netd.cli.publish import PublishSpecError, parse_publish

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Request = tuple[str, str, Any]
    Builder = Callable[[argparse.Namespace], list[Request]]
    Renderer = Callable[[argparse.Namespace, list[tuple[int, Any]]], "str | None"]


class UsageError(Exception):
    """A combination of arguments argparse cannot check; reported like an argparse error (exit 2)."""


# --- argument types (argparse reports their errors naming the option) -------------------------------------


def key_value_arg(
    what: str, *, value_required: bool, flags: tuple[str, ...] = ()
) -> Callable[[str], tuple[str, str]]:
    """``flags``: keys that may come alone (``-o encrypted``, as Docker), sent with the value ""."""

    def parse(text: str) -> tuple[str, str]:
        key, eq, value = text.partition("=")
        if not key or (value_required and not eq and key not in flags):
            raise argparse.ArgumentTypeError(f'"{text}" is not {what}=VALUE')
        return key, value

    return parse


def publish_arg(text: str) -> list[dict[str, Any]]:
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
        **({"Attachable": True} if args.attachable else {}),
        **({"Ingress": True} if getattr(args, "ingress", False) else {}),
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
    return [("GET", "/v1/networks" + docker_words.filters_query(args.filter), None)]


def build_network_inspect(args: argparse.Namespace) -> list[Request]:
    return [("GET", f"/v1/networks/{_q(name)}", None) for name in args.names]


def build_network_rotate_key(args: argparse.Namespace) -> list[Request]:
    return [("POST", f"/v1/networks/{_q(args.name)}/rotate-key?wait={args.wait:g}", None)]


def build_network_rm(args: argparse.Namespace) -> list[Request]:
    force = "?force=1" if args.force else ""
    return [("DELETE", f"/v1/networks/{_q(name)}{force}", None) for name in args.names]


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
    if args.link:
        endpoint["Links"] = list(args.link)
    if args.gw_priority is not None:
        endpoint["GwPriority"] = args.gw_priority
    body["EndpointConfig"] = endpoint
    body["Ports"] = [entry for entries in args.publish for entry in entries]
    if args.expose:
        body["ExposedPorts"] = {spec if "/" in spec else f"{spec}/tcp": {} for spec in args.expose}
    if args.publish_all:
        body["PublishAllPorts"] = True
    if args.service:
        body["Service"] = args.service
    return [("POST", f"/v1/networks/{_q(args.network)}/connect", body)]


def build_network_disconnect(args: argparse.Namespace) -> list[Request]:
    return [("POST", f"/v1/networks/{_q(args.network)}/disconnect", _netns_ref(args))]


def build_netns_create(args: argparse.Namespace) -> list[Request]:
    body = {"Name": args.name}
    if args.network:
        body["Network"] = args.network
    return [("POST", "/v1/netns", body)]


def build_netns_ls(args: argparse.Namespace) -> list[Request]:
    return [("GET", "/v1/netns", None)]


def build_netns_rm(args: argparse.Namespace) -> list[Request]:
    """One name: ``DELETE /v1/netns/NAME``.  Several: one request, so the daemon removes them in one change
    (their veths go in one group delete, ~1 ms each instead of ~25)."""
    if len(args.names) == 1:
        return [("DELETE", f"/v1/netns/{_q(args.names[0])}", None)]
    return [("DELETE", "/v1/netns", {"Names": list(args.names)})]


def render_netns_rm(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str | None:
    """The names removed; those not found go to stderr, and the exit status says so (like ``docker rm``)."""
    if len(args.names) == 1:
        return render_names(args, results)
    answer = results[0][1] if results else None
    if not isinstance(answer, dict):
        return None
    for message in (answer.get("Errors") or {}).values():
        sys.stderr.write(f"netd-ctl: {message}\n")
    if answer.get("Errors"):
        args.exit_status = 1
    return "\n".join(answer.get("Removed") or []) or None


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


def private_port_arg(text: str) -> tuple[int, str | None]:
    number, slash, proto = text.partition("/")
    if not number.isdigit() or not 1 <= int(number) <= 65535 or (slash and proto not in ("tcp", "udp", "sctp")):
        raise argparse.ArgumentTypeError(f'"{text}" is not PORT[/tcp|udp|sctp]')
    return int(number), proto or None


def build_node_ls(args: argparse.Namespace) -> list[Request]:
    return [("GET", "/v1/nodes", None)]


def build_node_inspect(args: argparse.Namespace) -> list[Request]:
    return [("GET", f"/v1/nodes/{_q(n)}", None) for n in args.names]


def build_node_rm(args: argparse.Namespace) -> list[Request]:
    return [("DELETE", f"/v1/nodes/{_q(n)}", None) for n in args.names]


def render_node_ls(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    nodes = [n for n in results[0][1] or [] if isinstance(n, dict)]
    if args.format == "json":
        return render.to_json(nodes)
    return render.node_table(nodes)
