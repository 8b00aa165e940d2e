"""netd-ctl service: Docker's --publish forms for services and the requests built."""

from __future__ import annotations

import argparse

import pytest

from netd.cli.main import build_requests
from netd.cli.service import service_port_arg


@pytest.mark.parametrize(
    ("spec", "entry"),
    [
        ("8080:80", {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080}),
        ("53:53/udp", {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53}),
        ("80", {"Protocol": "tcp", "TargetPort": 80}),
        (
            "mode=host,published=8081,target=81,protocol=udp",
            {"PublishMode": "host", "PublishedPort": 8081, "TargetPort": 81, "Protocol": "udp"},
        ),
        ("src=1,dst=2", {"PublishedPort": 1, "TargetPort": 2}),
    ],
)
def test_publish_forms(spec: str, entry: dict[str, object]) -> None:
    assert service_port_arg(spec) == entry


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("0:80", "not a port"),
        ("a:b", "not a port"),
        ("mode=host", "target="),
        ("colour=red,target=1", "not one of"),
    ],
)
def test_bad_publish(spec: str, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=text):
        service_port_arg(spec)


def test_requests() -> None:
    argv = ["service", "create", "web", "--network", "a", "--network", "b", "-p", "80", "--endpoint-mode", "dnsrr"]
    ((method, path, body),) = build_requests(argv)
    assert (method, path) == ("POST", "/v1/services")
    assert body["TaskTemplate"] == {"Networks": [{"Target": "a"}, {"Target": "b"}]}
    assert body["EndpointSpec"] == {"Mode": "dnsrr", "Ports": [{"Protocol": "tcp", "TargetPort": 80}]}
    assert build_requests(["service", "rm", "a", "b"]) == [
        ("DELETE", "/v1/services/a", None),
        ("DELETE", "/v1/services/b", None),
    ]
    (req,) = build_requests(["network", "connect", "--service", "web", "ov1", "t1"])
    assert req[2]["Service"] == "web"
