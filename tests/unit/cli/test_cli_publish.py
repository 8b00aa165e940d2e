from __future__ import annotations

import pytest

from netd.cli.publish import PublishSpecError, parse_publish


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [{"HostPort": 0, "ContainerPort": 80, "Proto": "tcp"}]),
        ("80/udp", [{"HostPort": 0, "ContainerPort": 80, "Proto": "udp"}]),
        ("53/UDP", [{"HostPort": 0, "ContainerPort": 53, "Proto": "udp"}]),
        ("8080:80", [{"HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"}]),
        ("8080:80/sctp", [{"HostPort": 8080, "ContainerPort": 80, "Proto": "sctp"}]),
        ("127.0.0.1:8080:80", [{"HostIp": "127.0.0.1", "HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"}]),
        ("127.0.0.1::80", [{"HostIp": "127.0.0.1", "HostPort": 0, "ContainerPort": 80, "Proto": "tcp"}]),
        (":8080:80", [{"HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"}]),
        ("[::1]:8080:80", [{"HostIp": "::1", "HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"}]),
        ("[2001:db8::1]::53/udp", [{"HostIp": "2001:db8::1", "HostPort": 0, "ContainerPort": 53, "Proto": "udp"}]),
        ("::1:8080:80", [{"HostIp": "::1", "HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"}]),
        (
            "8000-8002:80-82/udp",
            [
                {"HostPort": 8000, "ContainerPort": 80, "Proto": "udp"},
                {"HostPort": 8001, "ContainerPort": 81, "Proto": "udp"},
                {"HostPort": 8002, "ContainerPort": 82, "Proto": "udp"},
            ],
        ),
        (
            "10.0.0.1:9000-9001:90-91",
            [
                {"HostIp": "10.0.0.1", "HostPort": 9000, "ContainerPort": 90, "Proto": "tcp"},
                {"HostIp": "10.0.0.1", "HostPort": 9001, "ContainerPort": 91, "Proto": "tcp"},
            ],
        ),
        (
            "80-81",
            [
                {"HostPort": 0, "ContainerPort": 80, "Proto": "tcp"},
                {"HostPort": 0, "ContainerPort": 81, "Proto": "tcp"},
            ],
        ),
        ("65535:1", [{"HostPort": 65535, "ContainerPort": 1, "Proto": "tcp"}]),
    ],
)
def test_parse_publish_forms(spec: str, expected: list[dict[str, object]]) -> None:
    assert parse_publish(spec) == expected


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "no container port"),
        ("8080:", "no container port"),
        ("80/icmp", 'protocol "icmp"'),
        ("80/", 'protocol ""'),
        ("0", "outside 1-65535"),
        ("8080:65536", "outside 1-65535"),
        ("http", 'container port "http" is not a number'),
        ("x:80", 'host port "x" is not a number'),
        ("-1:80", 'host port "" is not a number'),
        ("8000-8002:80-81", "must have the same length"),
        ("8000-8001:80", "must have the same length"),
        ("8080:80-81", "must have the same length"),
        ("90-80", "ends before it starts"),
        ("300.1.1.1:8080:80", '"300.1.1.1" is not an IP address'),
        ("[::1:8080:80", 'missing "]"'),
        ("[]:8080:80", "empty host address"),
        ("[::1]8080:80", "expected [ip]:host:container"),
        ("[::1]:80", "expected [ip]:host:container"),
        ("\uff11\uff12:80", "is not a number"),  # fullwidth digits pass str.isdigit()
    ],
)
def test_parse_publish_rejects(spec: str, reason: str) -> None:
    with pytest.raises(PublishSpecError) as info:
        parse_publish(spec)
    assert f'invalid publish spec "{spec}"' in str(info.value)
    assert reason in str(info.value)
