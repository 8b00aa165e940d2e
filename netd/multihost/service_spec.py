"""``service create`` bodies (pure): Docker's ``ServiceSpec`` fields netd uses, checked with the load balancer's
own validation (``lb_model.validate_service``) so a spec the LB could not render is refused before anything is
written.

    {"Name": "web",
     "TaskTemplate": {"Networks": [{"Target": "ov1"}]},          # or "Networks": [{"Target": ...}] / ["ov1"]
     "EndpointSpec": {"Mode": "vip",                              # or "dnsrr"
                      "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080,
                                 "PublishMode": "ingress"}]},     # or "host"
     "Options": {"stickiness": "source-ip"},                      # netd's: the same client -> the same task
     "Labels": {}}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from netd.cluster.records import ServicePort, ServiceRecord
from netd.core.errors import ConflictError, InvalidError
from netd.core.model import DesiredState, PortMapping
from netd.core.ports import Holder, describe
from netd.firewall.lb_model import LbInputError, PortSpec, Service, validate_service

OPTIONS = {"stickiness": ("none", "source-ip")}
_FIELDS = {  # lb_model's field names -> the API's
    "name": "Name",
    "endpoint_mode": "EndpointSpec.Mode",
    "stickiness": "Options.stickiness",
    "networks": "Networks",
    "ports.proto": "EndpointSpec.Ports.Protocol",
    "ports.mode": "EndpointSpec.Ports.PublishMode",
    "ports.target": "EndpointSpec.Ports.TargetPort",
    "ports.published": "EndpointSpec.Ports.PublishedPort",
}


@dataclass
class ServiceSpec:
    name: str
    networks: list[str]  # names, as given
    ports: list[ServicePort] = field(default_factory=list)
    endpoint_mode: str = "vip"
    stickiness: str = "none"
    labels: dict[str, str] = field(default_factory=dict)


def _bad(what: str, why: str) -> InvalidError:
    return InvalidError(f"{what}: {why}", field=what)


def _networks(body: dict[str, Any]) -> list[str]:
    tmpl = body.get("TaskTemplate") or {}
    if not isinstance(tmpl, dict):
        raise _bad("TaskTemplate", "must be an object")
    raw = tmpl.get("Networks") if tmpl.get("Networks") is not None else body.get("Networks")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise _bad("Networks", 'must be a list like [{"Target": "ov1"}]')
    out = []
    for item in raw:
        target = item.get("Target") if isinstance(item, dict) else item
        if not isinstance(target, str) or not target:
            raise _bad("Networks", f'{item!r} is not a network: use {{"Target": "NAME"}}')
        out.append(target)
    return out


def _port(raw: Any) -> ServicePort:
    if not isinstance(raw, dict):
        raise _bad("EndpointSpec.Ports", f'{raw!r} is not an object like {{"TargetPort": 80}}')
    unknown = sorted(set(raw) - {"Protocol", "TargetPort", "PublishedPort", "PublishMode", "Name"})
    if unknown:
        raise _bad("EndpointSpec.Ports", f"unknown field(s) {', '.join(unknown)}")
    proto = raw.get("Protocol") or "tcp"
    mode = raw.get("PublishMode") or "ingress"
    target, published = raw.get("TargetPort"), raw.get("PublishedPort")
    for what, n in (("TargetPort", target), ("PublishedPort", published)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
            raise _bad(f"EndpointSpec.Ports.{what}", f"{n!r} is not a port number (1-65535)")
    if target is None:
        raise _bad("EndpointSpec.Ports.TargetPort", "is required: the port the tasks listen on")
    if proto not in ("tcp", "udp"):
        raise _bad("EndpointSpec.Ports.Protocol", f"{proto!r} is not tcp or udp")
    if mode not in ("ingress", "host"):
        raise _bad("EndpointSpec.Ports.PublishMode", f"{mode!r} is not ingress or host")
    for what, n in (("TargetPort", target), ("PublishedPort", published)):
        if n is not None and not 1 <= n <= 65535:
            raise _bad(f"EndpointSpec.Ports.{what}", f"{n} is not a port (1-65535)")
    return ServicePort(protocol=proto, target=target, published=published, mode=mode)


def parse_service_create(body: Any) -> ServiceSpec:
    if not isinstance(body, dict):
        raise _bad("body", "the request body must be a JSON object")
    unknown = sorted(set(body) - {"Name", "TaskTemplate", "Networks", "EndpointSpec", "Options", "Labels", "Mode"})
    if unknown:
        raise _bad(unknown[0], "is not a service field netd knows (Name, Networks, EndpointSpec, Options, Labels)")
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise _bad("Name", "is required: netd-ctl service create NAME --network NET")
    espec = body.get("EndpointSpec") or {}
    if not isinstance(espec, dict):
        raise _bad("EndpointSpec", "must be an object")
    mode = espec.get("Mode") or "vip"
    ports_raw = espec.get("Ports") or []
    if not isinstance(ports_raw, list):
        raise _bad("EndpointSpec.Ports", "must be a list")
    ports = [_port(p) for p in ports_raw]
    opts = body.get("Options") or {}
    if not isinstance(opts, dict) or not all(isinstance(v, str) for v in opts.values()):
        raise _bad("Options", 'must be an object of strings like {"stickiness": "source-ip"}')
    for key, value in opts.items():
        if key not in OPTIONS:
            raise _bad("Options", f"unknown option {key!r}: netd knows {', '.join(OPTIONS)}")
        if value not in OPTIONS[key]:
            raise _bad(f"Options.{key}", f"{value!r} is not one of {', '.join(OPTIONS[key])}")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise _bad("Labels", "must be an object of strings")
    spec = ServiceSpec(
        name=name,
        networks=_networks(body),
        ports=ports,
        endpoint_mode=mode if isinstance(mode, str) else repr(mode),
        stickiness=opts.get("stickiness", "none"),
        labels=dict(labels),
    )
    check_spec(spec)
    return spec


def check_spec(spec: ServiceSpec) -> None:
    """The load balancer's checks (name, modes, networks given once, a port published twice) and Docker's
    rule that a ``dnsrr`` service has no routing-mesh port."""
    model = Service(
        name=spec.name,
        vips=tuple((n, IPv4Address(0)) for n in spec.networks),
        ports=tuple(PortSpec(p.protocol, p.published, p.target, p.mode) for p in spec.ports),
        endpoint_mode=spec.endpoint_mode,  # type: ignore[arg-type]  # checked by validate_service
        stickiness=spec.stickiness,  # type: ignore[arg-type]
    )
    try:
        validate_service(model)
    except LbInputError as e:
        raise InvalidError(
            f"{_FIELDS.get(e.field, e.field)}: {e.message}", field=_FIELDS.get(e.field, e.field)
        ) from e
    if spec.endpoint_mode == "dnsrr" and any(p.published is not None and p.mode == "ingress" for p in spec.ports):
        raise InvalidError(
            "EndpointSpec.Ports: a dnsrr service has no VIP, so it cannot publish through the routing mesh; "
            "use mode=host or --endpoint-mode vip",
            field="EndpointSpec.Ports",
        )


def check_published_free(spec: ServiceSpec, others: list[ServiceRecord]) -> None:
    """A published port belongs to one service in the whole cluster (every node answers on it)."""
    for p in spec.ports:
        if p.published is None:
            continue
        for other in others:
            if any(q.published == p.published and q.protocol == p.protocol for q in other.ports):
                raise ConflictError(
                    f"EndpointSpec.Ports.PublishedPort: {p.published}/{p.protocol} is already published by "
                    f"service {other.name}; choose another port",
                    field="EndpointSpec.Ports.PublishedPort",
                )


def check_local_ports(spec: ServiceSpec, state: DesiredState) -> None:
    """A published port is refused while an endpoint of this node publishes the same IPv4 port with ``-p``
    (both would DNAT it on this node)."""
    for p in spec.ports:
        if p.published is None:
            continue
        for ep in state.endpoints.values():
            for m in ep.ports:
                if (
                    m.proto == p.protocol
                    and m.host_port == p.published
                    and (m.host_ip is None or m.host_ip.version == 4)
                ):
                    who = f"netns {ep.netns!r}" if ep.netns else ep.netns_path
                    raise ConflictError(
                        f"EndpointSpec.Ports.PublishedPort: {p.published}/{p.protocol} is published on this node "
                        f"by {who} (-p {describe(m)}); choose another port, or disconnect that endpoint",
                        field="EndpointSpec.Ports.PublishedPort",
                    )


def service_port_holders(services: Iterable[ServiceRecord]) -> list[Holder]:
    """Services' published ports as holders of host ports (``-p`` on this node is refused on them)."""
    return [
        Holder(
            PortMapping(host_port=p.published, container_port=p.target, proto=p.protocol),
            frozenset({4}),
            f"service {s.name!r} ({'routing mesh' if p.mode == 'ingress' else 'mode=host'})",
        )
        for s in services
        for p in s.ports
        if p.published is not None
    ]
