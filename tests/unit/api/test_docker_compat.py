"""Docker Engine API translation (pure): versions, filters, NetworkCreate and EndpointSettings, views."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from netd.core.errors import InvalidError
from netd.core.model import DesiredState, Network
from netd.dockerapi.compat import (
    LIST_FILTERS,
    PRUNE_FILTERS,
    check_version,
    create_body,
    docker_network_view,
    endpoint_config,
    network_matches,
    parse_filters,
    prune_matches,
    split_version,
)
from netd.drivers import parse_network_create


def _net(name: str = "web", **kw: object) -> Network:
    base = {"id": "ab" * 32, "name": name, "bridge": "br-x", "created": "2026-01-01T00:00:00+00:00"}
    return Network.model_validate({**base, **kw})


def test_versions() -> None:
    assert split_version("/v1.48/networks/x") == ("1.48", "/networks/x")
    assert split_version("/networks") == (None, "/networks")
    check_version("1.44")
    with pytest.raises(InvalidError, match=r"too new\. Maximum supported API version is 1\.48"):
        check_version("1.49")
    with pytest.raises(InvalidError, match="too old"):
        check_version("1.12")


def test_filters_both_shapes_and_unknown_keys() -> None:
    assert parse_filters('{"name": {"a": true, "b": false}}', LIST_FILTERS) == {"name": ["a"]}
    assert parse_filters('{"label": ["x=1"]}', LIST_FILTERS) == {"label": ["x=1"]}
    assert parse_filters(None, LIST_FILTERS) == {}
    with pytest.raises(InvalidError, match="invalid filter 'color'"):
        parse_filters('{"color": ["red"]}', LIST_FILTERS)
    with pytest.raises(InvalidError, match="not JSON"):
        parse_filters("{", LIST_FILTERS)
    with pytest.raises(InvalidError, match="list of strings"):
        parse_filters('{"name": 3}', LIST_FILTERS)


def test_network_matches() -> None:
    net = _net(labels={"team": "a"})
    assert network_matches(net, 0, {"name": ["we"]})  # a substring, as Docker
    assert not network_matches(net, 0, {"name": ["db"]})
    assert network_matches(net, 0, {"id": ["abab"]}) and not network_matches(net, 0, {"id": ["cd"]})
    assert network_matches(net, 0, {"label": ["team"]}) and network_matches(net, 0, {"label": ["team=a"]})
    assert not network_matches(net, 0, {"label": ["team=b"]})
    assert network_matches(net, 0, {"type": ["custom"]}) and not network_matches(net, 0, {"type": ["builtin"]})
    assert network_matches(net, 0, {"dangling": ["true"]}) and not network_matches(net, 2, {"dangling": ["true"]})
    assert not network_matches(net, 0, {"scope": ["swarm"]})
    with pytest.raises(InvalidError, match="'type'='x'"):
        network_matches(net, 0, {"type": ["x"]})


def test_prune_filters() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    net = _net(labels={"keep": "no"})
    assert prune_matches(net, parse_filters('{"until": ["1h"]}', PRUNE_FILTERS), now)
    assert not prune_matches(net, {"until": ["48h"]}, now)  # created within the last 48 h
    assert not prune_matches(net, {"label!": ["keep"]}, now)
    assert prune_matches(net, {"label": ["keep=no"], "until": ["2026-01-01T12:00:00Z"]}, now)
    with pytest.raises(InvalidError, match="until=soon"):
        prune_matches(net, {"until": ["soon"]}, now)


def test_create_body_from_the_cli_and_sdk() -> None:
    cli = {
        "Name": "n1", "Driver": "bridge", "Scope": "", "EnableIPv4": None, "EnableIPv6": None,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]},
        "Internal": False, "Attachable": False, "Ingress": False, "ConfigOnly": False, "ConfigFrom": None,
        "Options": {"com.docker.network.driver.mtu": "1400"}, "Labels": {"a": "b"},
    }  # fmt: skip
    req, _ = parse_network_create(create_body(cli))
    assert (req.name, req.mtu, req.labels, req.pools[0].gateway) == ("n1", 1400, {"a": "b"}, "10.9.0.1")
    sdk = {"Name": "n2", "Driver": None, "Options": None, "IPAM": None, "CheckDuplicate": None}
    assert parse_network_create(create_body(sdk))[0].driver == "bridge"
    v6only, _ = parse_network_create(create_body({"Name": "n3", "EnableIPv4": False, "EnableIPv6": True}))
    assert not v6only.enable_ipv4
    for bad, field in (
        ({"Name": "x", "Scope": "swarm"}, "Scope"),
        ({"Name": "x", "Ingress": True}, "Ingress"),
        ({"Name": "x", "ConfigFrom": {"Network": "y"}}, "ConfigFrom"),
        ({"Name": "x", "IPAM": {"Options": {"a": "b"}}}, "IPAM.Options"),
    ):
        with pytest.raises(InvalidError) as e:
            create_body(bad)
        assert e.value.field == field


def test_endpoint_config() -> None:
    cfg = {
        "IPAMConfig": {"IPv4Address": "10.9.0.5", "IPv6Address": "", "LinkLocalIPs": None},
        "Links": None, "Aliases": ["www"], "MacAddress": "", "DriverOpts": None, "NetworkID": "", "DNSNames": None,
    }  # fmt: skip
    assert endpoint_config(cfg) == {"IPAMConfig": {"IPv4Address": "10.9.0.5"}, "Aliases": ["www"]}
    assert endpoint_config(None) == {}
    with pytest.raises(InvalidError, match="links"):
        endpoint_config({"Links": ["a:b"]})
    with pytest.raises(InvalidError, match="driver options"):
        endpoint_config({"DriverOpts": {"x": "y"}})


def test_view_has_what_docker_clients_decode() -> None:
    net = _net(created="", ipam=[{"subnet": "10.9.0.0/24", "gateway": "10.9.0.1"}])
    view = docker_network_view(net, DesiredState(networks={"web": net}))
    assert view["Created"] == "0001-01-01T00:00:00Z"  # Go's time.Time cannot decode ""
    assert view["EnableIPv4"] is True and view["ConfigFrom"] == {"Network": ""} and view["Ingress"] is False


def test_endpoint_config_passes_gw_priority_through() -> None:
    assert endpoint_config({"GwPriority": 10})["GwPriority"] == 10
    assert "GwPriority" not in endpoint_config({"Aliases": ["a"]})
