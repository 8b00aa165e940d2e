"""``service create`` bodies: Docker's ServiceSpec fields, checked with the load balancer's validation."""

from __future__ import annotations

from typing import Any

import pytest

from netd.cluster.records import ServicePort, ServiceRecord
from netd.core.errors import ConflictError, InvalidError
from netd.multihost.service_spec import check_published_free, parse_service_create


def body(**over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "Name": "web",
        "TaskTemplate": {"Networks": [{"Target": "ov1"}]},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080}]},
    }
    b.update(over)
    return b


def test_a_docker_spec_parses() -> None:
    spec = parse_service_create(body(Options={"stickiness": "source-ip"}))
    assert (spec.name, spec.networks, spec.endpoint_mode, spec.stickiness) == ("web", ["ov1"], "vip", "source-ip")
    assert spec.ports == [ServicePort(protocol="tcp", target=80, published=8080, mode="ingress")]
    assert parse_service_create({"Name": "x", "Networks": ["a", "b"]}).networks == ["a", "b"]


@pytest.mark.parametrize(
    ("over", "field", "text"),
    [
        ({"Name": ""}, "Name", "required"),
        ({"Name": "bad name"}, "Name", "not a service name"),
        ({"EndpointSpec": {"Mode": "round"}}, "EndpointSpec.Mode", "not one of vip, dnsrr"),
        ({"TaskTemplate": {"Networks": []}}, "Networks", "no network"),
        ({"TaskTemplate": {"Networks": [{"Target": "a"}, {"Target": "a"}]}}, "Networks", "twice"),
        (
            {
                "EndpointSpec": {
                    "Ports": [{"TargetPort": 80, "PublishedPort": 81}, {"TargetPort": 82, "PublishedPort": 81}]
                }
            },
            "EndpointSpec.Ports.PublishedPort",
            "published twice",
        ),
        ({"EndpointSpec": {"Ports": [{"TargetPort": 0}]}}, "EndpointSpec.Ports.TargetPort", "not a port"),
        (
            {"EndpointSpec": {"Ports": [{"TargetPort": 80, "Protocol": "sctp"}]}},
            "EndpointSpec.Ports.Protocol",
            "tcp",
        ),
        (
            {"EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishMode": "x"}]}},
            "EndpointSpec.Ports.PublishMode",
            "x",
        ),
        ({"Options": {"stickiness": "cookie"}}, "Options.stickiness", "cookie"),
        ({"Options": {"color": "red"}}, "Options", "unknown option"),
        (
            {"EndpointSpec": {"Mode": "dnsrr", "Ports": [{"TargetPort": 80, "PublishedPort": 81}]}},
            "EndpointSpec.Ports",
            "dnsrr",
        ),
        ({"Replicas": 3}, "Replicas", "not a service field"),
    ],
)
def test_bad_input_names_the_field(over: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(InvalidError, match=text) as e:
        parse_service_create(body(**over))
    assert e.value.field == field


def test_a_published_port_belongs_to_one_service() -> None:
    other = ServiceRecord(id="o", name="api", networks=["n"], ports=[ServicePort(target=1, published=8080)])
    with pytest.raises(ConflictError, match="already published by service api"):
        check_published_free(parse_service_create(body()), [other])
    check_published_free(parse_service_create(body(EndpointSpec={"Ports": [{"TargetPort": 80}]})), [other])
