"""Command lines -> exact (method, path, body), without a server."""

from __future__ import annotations

import pytest

from netd.cli.main import build_request, build_requests


def test_status() -> None:
    assert build_request(["status"]) == ("GET", "/v1/status", None)
    assert build_request(["--socket", "/tmp/x.sock", "status", "--format", "json"]) == ("GET", "/v1/status", None)


def test_network_create_minimal() -> None:
    assert build_request(["network", "create", "my-net"]) == (
        "POST",
        "/v1/networks",
        {
            "Name": "my-net",
            "Driver": "bridge",
            "Internal": False,
            "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Config": []},
            "Options": {},
            "Labels": {},
        },
    )


def test_network_create_full() -> None:
    argv = [
        "network", "create", "-d", "macvlan",
        "--subnet", "172.30.0.0/24", "--gateway", "172.30.0.1", "--ip-range", "172.30.0.128/25",
        "--subnet", "fd00:1::/64", "--gateway", "fd00:1::1",
        "--aux-address", "router=172.30.0.2", "--aux-address", "v6dns=fd00:1::53",
        "--internal", "--ipv6",
        "-o", "parent=eth0", "--opt", "macvlan_mode=bridge", "-o", "com.docker.network.driver.mtu=1400",
        "--label", "team=web", "--label", "flag",
        "lan",
    ]  # fmt: skip
    method, path, body = build_request(argv)
    assert (method, path) == ("POST", "/v1/networks")
    assert body == {
        "Name": "lan",
        "Driver": "macvlan",
        "Internal": True,
        "EnableIPv6": True,
        "IPAM": {
            "Driver": "default",
            "Config": [
                {
                    "Subnet": "172.30.0.0/24",
                    "Gateway": "172.30.0.1",
                    "IPRange": "172.30.0.128/25",
                    "AuxiliaryAddresses": {"router": "172.30.0.2"},
                },
                {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1", "AuxiliaryAddresses": {"v6dns": "fd00:1::53"}},
            ],
        },
        "Options": {"parent": "eth0", "macvlan_mode": "bridge", "com.docker.network.driver.mtu": "1400"},
        "Labels": {"team": "web", "flag": ""},
    }


def test_network_create_matches_gateway_by_containment_like_docker() -> None:
    _, _, body = build_request(
        ["network", "create", "--subnet", "10.1.0.0/16", "--subnet", "10.2.0.0/16", "--gateway", "10.2.0.1", "n"]
    )
    assert body["IPAM"]["Config"] == [{"Subnet": "10.1.0.0/16"}, {"Subnet": "10.2.0.0/16", "Gateway": "10.2.0.1"}]


def test_network_create_unparseable_values_pair_by_position_for_the_daemon_to_judge() -> None:
    _, _, body = build_request(["network", "create", "--subnet", "bogus", "--gateway", "also-bogus", "n"])
    assert body["IPAM"]["Config"] == [{"Subnet": "bogus", "Gateway": "also-bogus"}]


def test_network_create_option_value_may_contain_equals() -> None:
    _, _, body = build_request(["network", "create", "-o", "a=b=c", "n"])
    assert body["Options"] == {"a": "b=c"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["network", "create", "-o", "parent", "n"], 'argument -o/--opt: "parent" is not KEY=VALUE'),
        (["network", "create", "--opt", "=x", "n"], 'argument -o/--opt: "=x" is not KEY=VALUE'),
        (["network", "create", "--aux-address", "router", "n"], '"router" is not NAME=VALUE'),
        (["network", "create", "--gateway", "10.0.0.1", "n"], "must have a corresponding --subnet"),
        (["network", "create", "--subnet", "10.0.0.0/24", "--gateway", "10.9.0.1", "n"], "no matching subnet"),
        (
            ["network", "create", "--subnet", "10.0.0.0/24", "--aux-address", "a=10.9.0.1", "n"],
            "no matching subnet for aux-address 10.9.0.1",
        ),
        (["network", "create", "--aux-address", "a=10.9.0.1", "n"], "--aux-address needs a --subnet"),
        (
            [
                "network",
                "create",
                "--subnet",
                "10.0.0.0/24",
                "--subnet",
                "10.1.0.0/24",
                "--gateway",
                "10.0.0.1",
                "--gateway",
                "10.0.0.2",
                "n",
            ],
            "cannot configure multiple gateways (10.0.0.1, 10.0.0.2)",
        ),
        (["network", "create", "--subnet", "10.0.0.0/16", "--subnet", "10.0.1.0/24", "n"], "overlap"),
        (["network", "create"], "the following arguments are required: NAME"),
        (["network", "connect", "net"], "give NETNS or --netns-path"),
        (["network", "connect", "--netns-path", "/proc/1/ns/net", "net", "web"], "not both"),
        (["network", "disconnect", "net"], "give NETNS or --netns-path"),
        (
            ["network", "connect", "-p", "80/icmp", "net", "web"],
            'argument -p/--publish: invalid publish spec "80/icmp"',
        ),
        (["network", "connect", "--publish", "1-3:1-2", "net", "web"], "must have the same length"),
        (["network", "rm"], "required: NETWORK"),
        (["port", "web", "80/icmp"], "is not PORT[/tcp|udp|sctp]"),
        (["frobnicate"], "invalid choice"),
        ([], "required: COMMAND"),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_requests(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("usage: netd-ctl")


def test_network_ls_inspect_rm_quote_names() -> None:
    assert build_request(["network", "ls", "-q"]) == ("GET", "/v1/networks", None)
    assert build_request(["network", "list"]) == ("GET", "/v1/networks", None)
    assert build_requests(["network", "inspect", "a", "b c/d"]) == [
        ("GET", "/v1/networks/a", None),
        ("GET", "/v1/networks/b%20c%2Fd", None),
    ]
    assert build_requests(["network", "rm", "a", "ü"]) == [
        ("DELETE", "/v1/networks/a", None),
        ("DELETE", "/v1/networks/%C3%BC", None),
    ]
    assert build_requests(["network", "rm", "-f", "a", "b"]) == [
        ("DELETE", "/v1/networks/a?force=1", None),
        ("DELETE", "/v1/networks/b?force=1", None),
    ]
    assert build_request(["network", "rm", "--force", "a"]) == ("DELETE", "/v1/networks/a?force=1", None)


def test_network_connect_full() -> None:
    argv = [
        "network", "connect", "--ip", "172.30.0.10", "--ip6", "fd00::10", "--alias", "www", "--alias", "web",
        "-p", "8080:80", "-p", "127.0.0.1:5353:53/udp", "--publish", "[::1]:9000-9001:90-91", "-p", "443",
        "my-net", "web",
    ]  # fmt: skip
    assert build_request(argv) == (
        "POST",
        "/v1/networks/my-net/connect",
        {
            "Netns": "web",
            "EndpointConfig": {
                "IPAMConfig": {"IPv4Address": "172.30.0.10", "IPv6Address": "fd00::10"},
                "Aliases": ["www", "web"],
            },
            "Ports": [
                {"HostPort": 8080, "ContainerPort": 80, "Proto": "tcp"},
                {"HostIp": "127.0.0.1", "HostPort": 5353, "ContainerPort": 53, "Proto": "udp"},
                {"HostIp": "::1", "HostPort": 9000, "ContainerPort": 90, "Proto": "tcp"},
                {"HostIp": "::1", "HostPort": 9001, "ContainerPort": 91, "Proto": "tcp"},
                {"HostPort": 0, "ContainerPort": 443, "Proto": "tcp"},
            ],
        },
    )


def test_network_connect_by_path_minimal() -> None:
    assert build_request(["network", "connect", "--netns-path", "/proc/42/ns/net", "net"]) == (
        "POST",
        "/v1/networks/net/connect",
        {"NetnsPath": "/proc/42/ns/net", "EndpointConfig": {"Aliases": []}, "Ports": []},
    )


def test_network_disconnect() -> None:
    assert build_request(["network", "disconnect", "net", "web"]) == (
        "POST",
        "/v1/networks/net/disconnect",
        {"Netns": "web"},
    )
    assert build_request(["network", "disconnect", "net", "--netns-path", "/run/netns/x"]) == (
        "POST",
        "/v1/networks/net/disconnect",
        {"NetnsPath": "/run/netns/x"},
    )


def test_netns_commands() -> None:
    assert build_request(["netns", "create", "web"]) == ("POST", "/v1/netns", {"Name": "web"})
    assert build_request(["netns", "ls", "--format", "json"]) == ("GET", "/v1/netns", None)
    assert build_request(["netns", "rm", "a"]) == ("DELETE", "/v1/netns/a", None)
    # several: one request, so the daemon removes them in one change (one group delete in the kernel)
    assert build_request(["netns", "rm", "a", "b c", "ü"]) == (
        "DELETE",
        "/v1/netns",
        {"Names": ["a", "b c", "ü"]},
    )


def test_reconcile_and_port() -> None:
    assert build_request(["reconcile"]) == ("POST", "/v1/reconcile", None)
    assert build_request(["port", "web"]) == ("GET", "/v1/netns/web", None)
    assert build_request(["port", "web", "80/tcp"]) == ("GET", "/v1/netns/web", None)


def test_socket_option_accepted_after_the_command_too() -> None:
    from netd.cli.main import parse_args, socket_path

    assert socket_path(parse_args(["network", "ls", "--socket", "/a.sock"])) == "/a.sock"
    assert socket_path(parse_args(["--socket", "/b.sock", "network", "ls"])) == "/b.sock"


def test_socket_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from netd.cli.main import DEFAULT_SOCKET, parse_args, socket_path

    monkeypatch.delenv("NETD_SOCKET", raising=False)
    assert socket_path(parse_args(["status"])) == DEFAULT_SOCKET
    monkeypatch.setenv("NETD_SOCKET", "/env.sock")
    assert socket_path(parse_args(["status"])) == "/env.sock"
    assert socket_path(parse_args(["--socket", "/flag.sock", "status"])) == "/flag.sock"
