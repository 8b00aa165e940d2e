"""``netd-ctl service create|ls|inspect|rm`` (cluster mode), and ``docker service create --publish`` syntax
parsed client-side into Docker's ``EndpointSpec.Ports`` entries::

    8080:80            published 8080 -> target 80, tcp, through the routing mesh (mode=ingress)
    8080:80/udp
    80                 target 80 only: reachable through the VIP, not published
    mode=host,published=8081,target=81[,protocol=udp]    Docker's long form (also src=/dst=, proto=)
"""

from __future__ import annotations

import argparse
from urllib.parse import quote

from netd.cli import render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Request = tuple[str, str, "Any"]
_LONG_KEYS = {
    "mode": "PublishMode",
    "published": "PublishedPort",
    "src": "PublishedPort",
    "source": "PublishedPort",
    "target": "TargetPort",
    "dst": "TargetPort",
    "destination": "TargetPort",
    "protocol": "Protocol",
    "proto": "Protocol",
}


def _num(spec: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f'invalid publish spec "{spec}": {text!r} is not a port (1-65535)')
    return int(text)


def service_port_arg(spec: str) -> dict[str, Any]:
    """One ``--publish`` value as a Docker ``EndpointSpec.Ports`` entry (argparse type: bad specs exit 2)."""
    if "=" in spec:
        out: dict[str, Any] = {}
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            field = _LONG_KEYS.get(key.strip().lower())
            if not sep or field is None:
                raise argparse.ArgumentTypeError(
                    f'invalid publish spec "{spec}": {part!r} is not one of mode=, published=, target=, protocol='
                )
            out[field] = _num(spec, value) if field.endswith("Port") else value.strip().lower()
        if "TargetPort" not in out:
            raise argparse.ArgumentTypeError(f'invalid publish spec "{spec}": target= is required')
        return out
    body, _, proto = spec.partition("/")
    pub, sep, target = body.rpartition(":")
    entry: dict[str, Any] = {"Protocol": proto.lower() or "tcp", "TargetPort": _num(spec, target)}
    if sep:
        entry["PublishedPort"] = _num(spec, pub)
    return entry


def option_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f'invalid option "{text}": use KEY=VALUE, e.g. stickiness=source-ip')
    return key, value


def _q(name: str) -> str:
    return quote(name, safe="")


def build_create(args: argparse.Namespace) -> list[Request]:
    body: dict[str, Any] = {
        "Name": args.name,
        "TaskTemplate": {"Networks": [{"Target": n} for n in args.network]},
        "EndpointSpec": {"Mode": args.endpoint_mode, "Ports": list(args.publish)},
    }
    if args.opt:
        body["Options"] = dict(args.opt)
    if args.label:
        body["Labels"] = dict(option_arg(x) for x in args.label)
    return [("POST", "/v1/services", body)]


def build_ls(args: argparse.Namespace) -> list[Request]:
    return [("GET", "/v1/services", None)]


def build_inspect(args: argparse.Namespace) -> list[Request]:
    return [("GET", f"/v1/services/{_q(n)}", None) for n in args.names]


def build_rm(args: argparse.Namespace) -> list[Request]:
    return [("DELETE", f"/v1/services/{_q(n)}", None) for n in args.names]


def _ports(svc: dict[str, Any]) -> str:
    out = []
    for p in (svc.get("Spec") or {}).get("EndpointSpec", {}).get("Ports") or []:
        pub = p.get("PublishedPort")
        where = f"*:{pub}->" if pub and p.get("PublishMode") != "host" else f"{pub}->" if pub else ""
        out.append(f"{where}{p.get('TargetPort')}/{p.get('Protocol')}")
    return ", ".join(out)


def render_ls(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    services = [s for s in results[0][1] or [] if isinstance(s, dict)]
    if args.format == "json":
        return render.to_json(services)
    if args.quiet:
        return "\n".join(str(s.get("ID", ""))[:12] for s in services)
    rows = []
    for s in services:
        spec = s.get("Spec") or {}
        tasks = s.get("Tasks") or []
        vips = ", ".join(str(v.get("Addr", "")) for v in (s.get("Endpoint") or {}).get("VirtualIPs") or [])
        rows.append(
            [
                str(s.get("ID", ""))[:12],
                str(spec.get("Name", "")),
                str((spec.get("EndpointSpec") or {}).get("Mode", "")),
                str(len(tasks)),
                vips or "-",
                _ports(s) or "-",
            ]
        )
    return render.table(["ID", "NAME", "MODE", "TASKS", "VIRTUAL IPS", "PORTS"], rows)


def render_created(args: argparse.Namespace, results: list[tuple[int, Any]]) -> str:
    answer = results[0][1] or {}
    return str(answer.get("ID", args.name)) if isinstance(answer, dict) else str(args.name)


EXAMPLES = {
    "netd-ctl service create": "example:\n  netd-ctl service create web --network ov1 --publish 8080:80\n"
    "  netd-ctl service create db --network ov1 --endpoint-mode dnsrr\n"
    "  netd-ctl service create api --network ov1 --publish mode=host,published=8081,target=81 "
    "-o stickiness=source-ip\n  netd-ctl network connect --service web ov1 web1    # a task",
    "netd-ctl service ls": "example:\n  netd-ctl service ls",
    "netd-ctl service inspect": "example:\n  netd-ctl service inspect web",
    "netd-ctl service rm": "example:\n  netd-ctl service rm web   # refused while it has tasks: disconnect them",
}


def add_commands(commands: Any, command: Any, add_format: Any, render_inspect: Any, render_names: Any) -> None:
    group = commands.add_parser(
        "service",
        help="Services of the cluster: a VIP and tasks.NAME over overlay networks",
        description="Services of the cluster (cluster mode)",
    )
    cmds = group.add_subparsers(dest="service_command", metavar="COMMAND", required=True)
    p = command(
        cmds,
        "create",
        "Create a service (its tasks join with network connect --service)",
        build_create,
        render_created,
    )
    p.add_argument("--network", action="append", default=[], metavar="NET", help="overlay network (repeatable)")
    p.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="SPEC",
        type=service_port_arg,
        help="PUBLISHED:TARGET[/PROTO], TARGET[/PROTO] (VIP only) or mode=host,published=N,target=N",
    )
    p.add_argument("--endpoint-mode", choices=["vip", "dnsrr"], default="vip", help="default %(default)s")
    p.add_argument(
        "-o",
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=option_arg,
        help="stickiness=source-ip: a client address always reaches the same task",
    )
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("name", metavar="NAME")
    p = command(cmds, "ls", "List the cluster's services", build_ls, render_ls, aliases=["list"])
    add_format(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only IDs")
    p = command(
        cmds,
        "inspect",
        "Show services: VIPs, tasks (node, address), ports",
        build_inspect,
        render_inspect,
        keep_going=True,
    )
    p.add_argument("names", metavar="NAME", nargs="+")
    p = command(
        cmds,
        "rm",
        "Remove services (refused while they have tasks)",
        build_rm,
        render_names,
        aliases=["remove"],
        keep_going=True,
    )
    p.add_argument("names", metavar="NAME", nargs="+")
