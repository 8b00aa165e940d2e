import pytest

from netd.core.errors import InvalidError
from netd.core.request import parse_connect
from netd.drivers import parse_network_create
from netd.drivers.bridge import BridgeOptions


def test_docker_network_create_body() -> None:
    req, opts = parse_network_create(
        {
            "Name": "app",
            "Driver": "bridge",
            "Internal": False,
            "IPAM": {
                "Driver": "default",
                "Config": [
                    {
                        "Subnet": "172.30.0.0/24",
                        "Gateway": "172.30.0.1",
                        "IPRange": "172.30.0.128/25",
                        "AuxiliaryAddresses": {"my-router": "172.30.0.129"},
                    }
                ],
            },
            "Options": {
                "com.docker.network.bridge.name": "br-app",
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
                "com.docker.network.driver.mtu": "1400",
            },
        }
    )
    assert isinstance(opts, BridgeOptions)
    assert (req.name, opts.bridge, opts.icc, opts.masquerade, req.mtu) == ("app", "br-app", False, True, 1400)
    assert req.pools[0].aux_addresses == {"my-router": "172.30.0.129"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Name": "x", "Driver": "overlay2"}, "Driver"),
        ({"Name": "x", "Options": {"com.docker.network.bridge.nme": "b"}}, "com.docker.network.bridge.nme"),
        (
            {"Name": "x", "Options": {"com.docker.network.bridge.name": "a-very-long-bridge-name"}},
            "com.docker.network.bridge.name",
        ),
        ({"Name": "x", "Options": {"com.docker.network.driver.mtu": "12"}}, "com.docker.network.driver.mtu"),
        (
            {"Name": "x", "Options": {"com.docker.network.bridge.enable_icc": "maybe"}},
            "com.docker.network.bridge.enable_icc",
        ),
        ({"Name": "bad/name"}, "name"),
        ({"Name": ""}, "Name"),
        ({"Name": "x", "Internal": "yes"}, "Internal"),
        ({"Name": "x", "Bogus": 1}, "Bogus"),
        ([], "body"),
    ],
)
def test_bad_create_names_the_field(body: object, field: str) -> None:
    with pytest.raises(InvalidError) as e:
        parse_network_create(body)
    assert e.value.field == field


def test_connect_needs_exactly_one_target() -> None:
    with pytest.raises(InvalidError, match="exactly one"):
        parse_connect({})
    with pytest.raises(InvalidError, match="exactly one"):
        parse_connect({"Netns": "a", "NetnsPath": "/proc/1/ns/net"})
    with pytest.raises(InvalidError, match="absolute"):
        parse_connect({"NetnsPath": "proc/1/ns/net"})


def test_connect_fields() -> None:
    req = parse_connect(
        {"Netns": "web", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "172.30.0.140"}, "Aliases": ["WWW"]}}
    )
    assert str(req.ipv4) == "172.30.0.140" and req.aliases == ["www"]
    with pytest.raises(InvalidError, match="not an IPv4"):
        parse_connect({"Netns": "web", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "fd00::1"}}})
    with pytest.raises(InvalidError, match="valid DNS name"):
        parse_connect({"Netns": "web", "EndpointConfig": {"Aliases": ["-bad"]}})
    ports = parse_connect({"Netns": "web", "Ports": [{"HostPort": 80, "ContainerPort": 80}]}).ports
    assert [(p.host_port, p.container_port, p.proto) for p in ports] == [(80, 80, "tcp")]  # tests/unit/ports
