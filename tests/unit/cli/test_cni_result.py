"""The CNI plugin's pure parts: runtimeConfig -> connect body, endpoint -> result, error objects."""

from __future__ import annotations

import json

import pytest

from netd.cli.cni import CniError, Plugin, build_result, connect_body, error_json

EP = {
    "Interface": "eth0",
    "MacAddress": "02:00:00:00:00:01",
    "IPv4Address": "10.9.0.5/24",
    "Gateway": "10.9.0.1",
    "IPv6Address": "fd00::5/64",
    "IPv6Gateway": "fd00::1",
    "Resolver": "10.9.0.1",
}


def test_connect_body_from_runtime_config_and_args() -> None:
    rt = {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "UDP", "hostIP": "127.0.0.1"}],
        "ips": ["10.9.0.7/24", "fd00::7/64"],
        "mac": "02:00:00:00:00:07",
        "aliases": {"app": ["www"], "other": ["nope"]},
    }
    body = connect_body(rt, "IgnoreUnknown=1;K8S_POD_NAME=web-1;K8S_POD_NAMESPACE=web-1", "app")
    assert body == {
        "EndpointConfig": {
            "IPAMConfig": {"IPv4Address": "10.9.0.7", "IPv6Address": "fd00::7"},
            "MacAddress": "02:00:00:00:00:07",
            "Aliases": ["www", "web-1"],
        },
        "Ports": [{"HostIp": "127.0.0.1", "HostPort": 8080, "ContainerPort": 80, "Proto": "udp"}],
    }
    assert connect_body(None, "", "app") == {}
    assert connect_body({"aliases": ["a"]}, "K8S_POD_NAME=not a name", "app") == {
        "EndpointConfig": {"Aliases": ["a"]}
    }
    with pytest.raises(CniError) as e:
        connect_body({"portMappings": {"x": 1}}, "", "app")
    assert e.value.code == 7


def test_result_shapes_per_version() -> None:
    r = build_result("1.0.0", EP, "/run/netns/c1", None)
    assert r["interfaces"] == [{"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/c1"}]
    assert r["ips"] == [
        {"address": "10.9.0.5/24", "interface": 0, "gateway": "10.9.0.1"},
        {"address": "fd00::5/64", "interface": 0, "gateway": "fd00::1"},
    ]
    assert r["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.9.0.1"}, {"dst": "::/0", "gw": "fd00::1"}]
    assert r["dns"] == {"nameservers": ["10.9.0.1"]}
    old = build_result("0.4.0", EP, "/run/netns/c1", {"interfaces": [{"name": "lo"}]})
    assert [ip["version"] for ip in old["ips"]] == ["4", "6"] and old["ips"][0]["interface"] == 1
    # a chain's earlier result is passed through, netd's interface, addresses and routes added after it
    prev = {
        "interfaces": [{"name": "net0", "sandbox": "/x"}],
        "ips": [{"address": "192.0.2.5/24", "interface": 0}],
        "routes": [{"dst": "198.51.100.0/24"}],
        "dns": {"nameservers": ["192.0.2.53"]},
    }
    chained = build_result("1.0.0", {**EP, "IPv6Address": "", "Resolver": ""}, "/x", prev)
    assert [i["name"] for i in chained["interfaces"]] == ["net0", "eth0"]
    assert chained["ips"] == [
        {"address": "192.0.2.5/24", "interface": 0},
        {"address": "10.9.0.5/24", "interface": 1, "gateway": "10.9.0.1"},
    ]
    assert chained["routes"] == [{"dst": "198.51.100.0/24"}, {"dst": "0.0.0.0/0", "gw": "10.9.0.1"}]
    assert chained["dns"] == {"nameservers": ["192.0.2.53"]}
    internal = build_result("1.1.0", {**EP, "Gateway": "", "IPv6Gateway": "", "Resolver": ""}, "/x", None)
    assert internal["routes"] == [] and "dns" not in internal


def test_error_objects_and_versions() -> None:
    out = json.loads(error_json("1.0.0", CniError(11, "netd is not reachable", "start netd")))
    assert out == {"cniVersion": "1.0.0", "code": 11, "msg": "netd is not reachable", "details": "start netd"}
    with pytest.raises(CniError) as e:
        Plugin({"CNI_COMMAND": "ADD"}, json.dumps({"cniVersion": "0.2.0", "name": "x"}))
    assert e.value.code == 1
    with pytest.raises(CniError) as e:
        Plugin({"CNI_COMMAND": "ADD"}, "[]")
    assert e.value.code == 6
    p = Plugin({"CNI_COMMAND": "VERSION"}, "")
    assert p.run() == {"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    env = {"CNI_COMMAND": "ADD", "NETD_SOCKET": "/env.sock"}
    assert Plugin(env, json.dumps({"cniVersion": "1.0.0", "name": "x"})).socket == "/env.sock"
    conf = {"cniVersion": "1.0.0", "name": "x", "socket": "/conf.sock"}
    assert Plugin(env, json.dumps(conf)).socket == "/conf.sock"
    assert Plugin({"CNI_COMMAND": "ADD"}, json.dumps({"cniVersion": "1.0.0", "name": "x"})).socket == (
        "/run/netd/netd.sock"
    )
