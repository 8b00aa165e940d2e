"""Strict input (issue 11 item 8): each body here was answered 500 or accepted; now 400 naming the field."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from netd.api import _body, error_middleware
from netd.core import ipam
from netd.core.errors import InvalidError
from netd.core.naming import validate_ifname, validate_name, validate_netns_name
from netd.core.request import parse_connect, parse_disconnect, parse_netns_create
from netd.core.strict import ascii_int, is_dns_name, parse_json
from netd.drivers import parse_network_create
from netd.drivers.bridge import BridgeOptions

MTU = "com.docker.network.driver.mtu"
BRIDGE = "com.docker.network.bridge.name"


def _pool(**cfg: Any) -> dict[str, Any]:
    return {"Name": "n", "EnableIPv6": True, "IPAM": {"Config": [cfg]}}


def _create_and_pool(body: Any) -> None:
    """What the service does with a create body before anything changes: parse, then validate each pool."""
    req, _ = parse_network_create(body)
    for p in req.pools:
        assert p.subnet is not None
        ipam.validate_pool(p.subnet, p.gateway, p.ip_range, p.aux_addresses)


CREATE_CASES: list[tuple[str, Any, str]] = [
    ("Labels a list", {"Name": "n", "Labels": ["a"]}, "Labels"),
    ("Labels a string", {"Name": "n", "Labels": "a=b"}, "Labels"),
    ("Labels non-string value", {"Name": "n", "Labels": {"a": 1}}, "Labels"),
    ("CheckDuplicate a string", {"Name": "n", "CheckDuplicate": "yes"}, "CheckDuplicate"),
    ("CheckDuplicate a number", {"Name": "n", "CheckDuplicate": 1}, "CheckDuplicate"),
    ("Attachable a string", {"Name": "n", "Attachable": "true"}, "Attachable"),
    ("IPAM a list", {"Name": "n", "IPAM": []}, "IPAM"),
    ("IPAM a string", {"Name": "n", "IPAM": "default"}, "IPAM"),
    ("IPAM false", {"Name": "n", "IPAM": False}, "IPAM"),
    ("IPAM.Config an object", {"Name": "n", "IPAM": {"Config": {}}}, "IPAM.Config"),
    ("IPAM.Config zero", {"Name": "n", "IPAM": {"Config": 0}}, "IPAM.Config"),
    ("IPAM.Driver a number", {"Name": "n", "IPAM": {"Driver": 0}}, "Driver"),
    ("IPAM typo", {"Name": "n", "IPAM": {"Confg": []}}, "Confg"),
    ("IPAM.Config typo", {"Name": "n", "IPAM": {"Config": [{"Subnett": "10.9.0.0/24"}]}}, "Subnett"),
    ("Name a number", {"Name": 5}, "Name"),
    ("Name a bool", {"Name": True}, "Name"),
    ("Name non-ASCII", {"Name": "netzwerk-ä"}, "name"),
    ("Name with newline", {"Name": "net\n"}, "name"),
    ("bridge all", {"Name": "n", "Options": {BRIDGE: "all"}}, BRIDGE),
    ("bridge default", {"Name": "n", "Options": {BRIDGE: "default"}}, BRIDGE),
    ("bridge dot", {"Name": "n", "Options": {BRIDGE: "."}}, BRIDGE),
    ("bridge dotdot", {"Name": "n", "Options": {BRIDGE: ".."}}, BRIDGE),
    ("bridge slash", {"Name": "n", "Options": {BRIDGE: "br/0"}}, BRIDGE),
    ("bridge colon", {"Name": "n", "Options": {BRIDGE: "br:0"}}, BRIDGE),
    ("bridge space", {"Name": "n", "Options": {BRIDGE: "br 0"}}, BRIDGE),
    ("bridge newline", {"Name": "n", "Options": {BRIDGE: "br0\n"}}, BRIDGE),
    ("bridge non-ASCII", {"Name": "n", "Options": {BRIDGE: "brü"}}, BRIDGE),
    ("MTU underscore", {"Name": "n", "Options": {MTU: "1_500"}}, MTU),
    ("MTU leading space", {"Name": "n", "Options": {MTU: " 1500"}}, MTU),
    ("MTU trailing newline", {"Name": "n", "Options": {MTU: "1500\n"}}, MTU),
    ("MTU plus sign", {"Name": "n", "Options": {MTU: "+1500"}}, MTU),
    ("MTU full-width digits", {"Name": "n", "Options": {MTU: "\uff11\uff15\uff10\uff10"}}, MTU),
    ("MTU Arabic-Indic digits", {"Name": "n", "Options": {MTU: "\u0661\u0665\u0660\u0660"}}, MTU),
    ("MTU 4300 digits", {"Name": "n", "Options": {MTU: "1" * 4300}}, MTU),
    ("subnet multicast v6", _pool(Subnet="ff0e::/64"), "subnet"),
    ("subnet scoped v6", _pool(Subnet="fd00:78::%eth0/64"), "subnet"),
    ("subnet loopback", _pool(Subnet="127.0.0.0/8"), "subnet"),
    ("subnet inside loopback", _pool(Subnet="127.5.0.0/24"), "subnet"),
    ("subnet multicast v4", _pool(Subnet="224.0.0.0/24"), "subnet"),
    ("subnet this-network", _pool(Subnet="0.0.0.0/8"), "subnet"),
    ("subnet everything", _pool(Subnet="0.0.0.0/0"), "subnet"),
    ("subnet reserved", _pool(Subnet="255.255.255.0/24"), "subnet"),
    ("subnet class E", _pool(Subnet="240.1.0.0/16"), "subnet"),
    ("subnet link-local v4", _pool(Subnet="169.254.10.0/24"), "subnet"),
    ("subnet link-local v6", _pool(Subnet="fe80::/64"), "subnet"),
    ("subnet loopback v6", _pool(Subnet="::1/128"), "subnet"),
    ("subnet v4-mapped", _pool(Subnet="::ffff:10.0.0.0/120"), "subnet"),
    ("subnet netmask form", _pool(Subnet="10.9.0.0/255.255.255.0"), "subnet"),
    ("subnet without prefix", _pool(Subnet="10.9.0.0"), "subnet"),
    ("subnet full-width prefix", _pool(Subnet="10.9.0.0/\uff12\uff14"), "subnet"),
    ("subnet with space", _pool(Subnet=" 10.9.0.0/24"), "subnet"),
    ("gateway /99", _pool(Subnet="10.9.0.0/24", Gateway="10.9.0.1/99"), "gateway"),
    ("gateway netmask", _pool(Subnet="10.9.0.0/24", Gateway="10.9.0.1/255.0.0.0"), "gateway"),
    ("gateway zone", _pool(Subnet="fd00:9::/64", Gateway="fd00:9::1%eth0"), "gateway"),
    ("ip-range zone", _pool(Subnet="fd00:9::/64", IPRange="fd00:9::%lo/80"), "ip-range"),
    (
        "aux-address /99",
        _pool(Subnet="10.9.0.0/24", AuxiliaryAddresses={"r": "10.9.0.9/99"}),
        "aux-address r",
    ),
]


@pytest.mark.parametrize(("what", "body", "field"), CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_bad_network_create_names_the_field(what: str, body: Any, field: str) -> None:
    before = copy.deepcopy(body)
    with pytest.raises(InvalidError) as e:
        _create_and_pool(body)
    assert e.value.field == field, e.value.message
    assert body == before  # parsing never edits the caller's body


def _connect(ipam_cfg: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"Netns": "web", **kw}
    if ipam_cfg is not None:
        body["EndpointConfig"] = {"IPAMConfig": ipam_cfg}
    return body


CONNECT_CASES: list[tuple[str, Any, str]] = [
    ("ip /99", _connect({"IPv4Address": "10.0.0.5/99"}), "ip"),
    ("ip6 /200", _connect({"IPv6Address": "fd00::5/200"}), "ip6"),
    ("ip6 zone", _connect({"IPv6Address": "fd00::5%eth0"}), "ip6"),
    ("ip6 zone with prefix", _connect({"IPv6Address": "fd00::5%eth0/64"}), "ip6"),
    ("ip with space", _connect({"IPv4Address": "10.0.0.5 "}), "ip"),
    ("ip a number", _connect({"IPv4Address": 167772165}), "IPv4Address"),
    ("alias non-ASCII", _connect(EndpointConfig={"Aliases": ["wéb"]}), "alias"),
    ("alias non-ASCII digits", _connect(EndpointConfig={"Aliases": ["web\u0661"]}), "alias"),
    ("alias underscore-label", _connect(EndpointConfig={"Aliases": ["_svc"]}), "alias"),
    ("alias empty label", _connect(EndpointConfig={"Aliases": ["a..b"]}), "alias"),
    ("alias label 64", _connect(EndpointConfig={"Aliases": ["a" * 64]}), "alias"),
    ("alias 254 long", _connect(EndpointConfig={"Aliases": [".".join(["a" * 50] * 5)]}), "alias"),
    ("Aliases a string", _connect(EndpointConfig={"Aliases": "web"}), "alias"),
    ("Aliases zero", _connect(EndpointConfig={"Aliases": 0}), "alias"),
    ("EndpointConfig a list", _connect(EndpointConfig=[]), "EndpointConfig"),
    ("IPAMConfig a list", _connect(EndpointConfig={"IPAMConfig": []}), "EndpointConfig.IPAMConfig"),
    ("Netns a number", {"Netns": 7}, "Netns"),
    ("Netns a bool", {"Netns": True}, "Netns"),
    ("port full-width", _connect(Ports=[{"ContainerPort": "\uff18\uff10"}]), "publish"),
    ("port underscore", _connect(Ports=[{"ContainerPort": "8_0"}]), "publish"),
    ("port space", _connect(Ports=[{"ContainerPort": " 80"}]), "publish"),
    ("port superscript", _connect(Ports=[{"ContainerPort": "\u00b2"}]), "publish"),
    ("port huge", _connect(Ports=[{"ContainerPort": "9" * 30}]), "publish"),
    ("host port full-width", _connect(Ports=[{"ContainerPort": 80, "HostPort": "\uff18\uff10"}]), "publish"),
    ("host ip zone", _connect(Ports=[{"ContainerPort": 80, "HostIp": "fe80::1%eth0"}]), "publish"),
    ("host ip multicast", _connect(Ports=[{"ContainerPort": 80, "HostIp": "224.0.0.1"}]), "publish"),
    ("host ip false", _connect(Ports=[{"ContainerPort": 80, "HostIp": False}]), "publish"),
    ("proto zero", _connect(Ports=[{"ContainerPort": 80, "Proto": 0}]), "publish"),
]


@pytest.mark.parametrize(("what", "body", "field"), CONNECT_CASES, ids=[c[0] for c in CONNECT_CASES])
def test_bad_connect_names_the_field(what: str, body: Any, field: str) -> None:
    with pytest.raises(InvalidError) as e:
        parse_connect(body)
    assert e.value.field == field, e.value.message


NETNS_CASES: list[tuple[str, Any, str]] = [
    ("number", {"Name": 5}, "Name"),
    ("bool", {"Name": True}, "Name"),
    ("float", {"Name": 1.5}, "Name"),
    ("list", {"Name": ["a"]}, "Name"),
    ("missing", {}, "Name"),
    ("empty", {"Name": ""}, "Name"),
    ("unknown field", {"Name": "a", "Labels": {}}, "Labels"),
    ("not an object", ["a"], "body"),
    ("non-ASCII", {"Name": "wéb"}, "name"),
    ("underscore (not a DNS name)", {"Name": "web_1"}, "name"),
    ("leading hyphen", {"Name": "-web"}, "name"),
    ("trailing hyphen", {"Name": "web-"}, "name"),
    ("empty label", {"Name": "a..b"}, "name"),
    ("trailing dot", {"Name": "web."}, "name"),
    ("label of 64", {"Name": "a" * 64}, "name"),
    ("slash", {"Name": "../etc"}, "name"),
    ("newline", {"Name": "web\n"}, "name"),
]


@pytest.mark.parametrize(("what", "body", "field"), NETNS_CASES, ids=[c[0] for c in NETNS_CASES])
def test_bad_netns_create_names_the_field(what: str, body: Any, field: str) -> None:
    with pytest.raises(InvalidError) as e:
        parse_netns_create(body)
    assert e.value.field == field, e.value.message


def test_disconnect_refuses_unknown_fields() -> None:
    """A typo (or any extra field) used to be ignored and the disconnect went ahead."""
    with pytest.raises(InvalidError) as e:
        parse_disconnect({"Netns": "web", "Force": "yes"})
    assert e.value.field == "Force"
    with pytest.raises(InvalidError) as e:
        parse_disconnect([])
    assert e.value.field == "body"
    assert parse_disconnect({"Netns": "web"}).netns == "web"


def test_good_input_still_passes() -> None:
    req, opts = parse_network_create(
        {
            "Name": "n",
            "EnableIPv6": True,
            "CheckDuplicate": True,
            "Attachable": False,
            "Labels": {"team": "a"},
            "IPAM": {
                "Driver": "default",
                "Options": {},
                "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}, {"Subnet": "fd00:9::/64"}],
            },
            "Options": {MTU: "1500", BRIDGE: "br-ok_1.x"},
        }
    )
    assert isinstance(opts, BridgeOptions)
    assert req.mtu == 1500 and opts.bridge == "br-ok_1.x"
    assert parse_network_create({"Name": "n", "IPAM": None, "Labels": None})[0].pools == []
    cfg = ipam.validate_pool("10.9.0.0/24", "10.9.0.1/24", "10.9.0.128/25", {"r": "10.9.0.2"})
    assert str(cfg.gateway) == "10.9.0.1"
    assert str(ipam.validate_pool("fd00:9::/64", "fd00:9::1").gateway) == "fd00:9::1"
    # public and documentation ranges are a user's choice (a routed network may use them)
    for subnet in ("192.0.2.0/24", "100.64.0.0/16", "8.8.8.0/24", "2001:db8::/64", "172.17.0.0/16"):
        ipam.validate_pool(subnet)
    c = parse_connect(
        {
            "Netns": "web",
            "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.9.0.5/24"}, "Aliases": ["Web.Example", "a-1"]},
            "Ports": [{"ContainerPort": "80", "HostPort": "8080", "HostIp": "[::]"}],
        }
    )
    assert str(c.ipv4) == "10.9.0.5" and c.aliases == ["web.example", "a-1"]
    assert (c.ports[0].container_port, c.ports[0].host_port) == (80, 8080)
    assert parse_netns_create({"Name": "web-1.a"}) == "web-1.a"
    # connect/disconnect by name stays lenient (a netns made before these rules must still be reachable)
    assert parse_connect({"Netns": "old_name"}).target.netns == "old_name"


def test_naming_helpers() -> None:
    for bad in ("all", "default", ".", "..", "a/b", "a:b", "a b", "a\tb", "", "x" * 16, "eth0\n"):
        with pytest.raises(InvalidError):
            validate_ifname(bad, "f")
    assert validate_ifname("br-x_1.5", "f") == "br-x_1.5"
    with pytest.raises(InvalidError):
        validate_name("abc\n", "network")
    assert validate_netns_name("a" * 63) == "a" * 63
    assert is_dns_name("a.b.c") and is_dns_name("example.com.") and not is_dns_name(".")
    assert is_dns_name(".".join(["a" * 63] * 3) + "." + "a" * 61) and not is_dns_name("a" * 254)
    assert ascii_int("1500", "mtu", 68, 65535, "an MTU") == 1500
    for bad in ("1_500", " 1500", "1500 ", "+1500", "-1", "\uff11\uff15\uff10\uff10", "", "67", "65536"):
        with pytest.raises(InvalidError):
            ascii_int(bad, "mtu", 68, 65535, "an MTU")


JSON_CASES: list[tuple[str, bytes]] = [
    ("nested arrays", b"[" * 3000),
    ("nested objects", b'{"a":' * 3000),
    ("nested just over the limit", b"[" * 17 + b"]" * 17),
    ("4300-digit integer", b'{"Name": ' + b"1" * 4300 + b"}"),
    ("25-digit integer", b"1" * 25),
    ("NaN", b'{"Name": NaN}'),
    ("Infinity", b'{"Name": Infinity}'),
    ("-Infinity", b"-Infinity"),
    ("1e999", b'{"Name": 1e999}'),
    ("lone surrogate", b'{"Name": "\\ud800"}'),
    ("lone surrogate key", b'{"\\udfff": 1}'),
    ("not UTF-8", b'{"Name": "\xff"}'),
    ("not JSON", b"{not json"),
]


@pytest.mark.parametrize(("what", "raw"), JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_unsafe_json_is_refused(what: str, raw: bytes) -> None:
    with pytest.raises(InvalidError) as e:
        parse_json(raw)
    assert e.value.field == "body"


def test_safe_json_parses() -> None:
    assert parse_json(b'{"a": [1, 2.5, -3, "x\\u00e9"]}') == {"a": [1, 2.5, -3, "x\u00e9"]}
    assert parse_json(b"[" * 16 + b"]" * 16) is not None


async def _post_all(cases: list[tuple[bytes, dict[str, str]]]) -> list[tuple[int, bytes]]:
    app = web.Application(middlewares=[error_middleware])

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"got": repr(await _body(request))})

    app.router.add_post("/x", echo)
    out = []
    async with TestServer(app) as srv:
        for data, headers in cases:
            reader, writer = await asyncio.open_connection(srv.host, srv.port)
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            request = f"POST /x HTTP/1.1\r\nHost: netd\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
            writer.write((request + head + "\r\n").encode() + data)
            resp = await reader.read()
            writer.close()
            out.append((int(resp.split(b" ", 2)[1]), resp.partition(b"\r\n\r\n")[2]))
    return out


def test_api_body_answers_400_not_500() -> None:
    """Through aiohttp and the error middleware: what was a 500 (or a wrong 200) is a 400 naming the field."""
    gz = {"Content-Encoding": "gzip"}
    cases = [(raw, {}) for _, raw in JSON_CASES] + [(b"not gzip", gz), (b"{}", {"Content-Encoding": "deflate"})]
    answers = asyncio.run(_post_all([*cases, (b'{"Name": "ok"}', {})]))
    for (data, headers), (status, payload) in zip(cases, answers[:-1], strict=True):
        assert 400 <= status < 500, (data[:40], headers, status, payload)
    assert answers[-1][0] == 200
    assert b'"field": "Content-Encoding"' in answers[len(JSON_CASES)][1]
