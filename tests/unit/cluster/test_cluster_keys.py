"""The cluster key layout, the stored records and the [cluster] config section (pure, no etcd)."""

from __future__ import annotations

import os
import subprocess
import sys
from ipaddress import IPv4Interface, ip_address, ip_network
from pathlib import Path

import pytest

from netd.cluster.keys import KeyLayout, ParsedKey, parse_subnet_token, subnet_token
from netd.cluster.records import (
    Allocation,
    EndpointRecord,
    NodeAlive,
    NodeRecord,
    OverlayNetwork,
    ServicePort,
    ServiceRecord,
    SubnetReservation,
    decode,
    decode_kind,
    encode,
)
from netd.core.config import load_settings, parse_duration
from netd.core.errors import InvalidError
from netd.core.ipam import validate_pool

K = KeyLayout("/netd/v1")


def test_every_key_parses_back_to_what_it_names() -> None:
    v4, v6 = ip_address("10.0.9.7"), ip_address("fd00::7")
    cases = {
        K.node("n1"): ParsedKey("node", "n1"),
        K.alive("n1"): ParsedKey("alive", "n1"),
        K.network("abc123"): ParsedKey("network", "abc123"),
        K.network_name("my-net"): ParsedKey("network_name", "my-net"),
        K.vni(4097): ParsedKey("vni", "00004097"),
        K.subnet(ip_network("10.0.9.0/24")): ParsedKey("subnet", "10.0.9.0_24"),
        K.address("abc123", v4): ParsedKey("address", "10.0.9.7", parent="abc123"),
        K.address("abc123", v6): ParsedKey("address", "fd00::7", parent="abc123"),
        K.endpoint("abc123", "ep1"): ParsedKey("endpoint", "ep1", parent="abc123"),
        K.service("s1"): ParsedKey("service", "s1"),
        K.network_key("abc123"): ParsedKey("key", "abc123"),
    }
    for key, parsed in cases.items():
        assert key.startswith("/netd/v1/")
        assert K.parse(key) == parsed, key
    assert K.vni(4097) == "/netd/v1/vnis/00004097"
    assert K.address("abc123", v4).startswith(K.addresses_of("abc123"))
    assert K.endpoint("abc123", "ep1").startswith(K.endpoints_of("abc123"))


def test_foreign_and_malformed_keys_are_ignored() -> None:
    for key in (
        "/other/v1/nodes/n1",
        "/netd/v1/unknown/x",
        "/netd/v1/nodes/",
        "/netd/v1/nodes/a/b",
        "/netd/v1/endpoints/net",
        "/netd/v2/nodes/n1",
        "/netd/v1",
    ):
        assert K.parse(key) is None, key
    # another prefix does not read netd/v1 keys, even where one prefix starts the other
    assert KeyLayout("/netd/v").parse("/netd/v1/nodes/n1") is None


def test_subnet_token_round_trip() -> None:
    for s in ("10.0.0.0/24", "10.0.0.0/8", "fd12:3456::/64"):
        assert parse_subnet_token(subnet_token(ip_network(s))) == ip_network(s)


def test_records_round_trip_through_json() -> None:
    pool = validate_pool("10.0.9.0/24", "10.0.9.1", "10.0.9.128/25", {"router": "10.0.9.2"})
    records = [
        NodeRecord(
            name="n1",
            advertise_address=ip_address("192.0.2.11"),
            version="0.1.0",
            started="t",
            local_subnets=[ip_network("172.17.0.0/16")],
        ),
        NodeAlive(name="n1", lease=0x1234, advertise_address=ip_address("192.0.2.11")),
        OverlayNetwork(
            id="abc",
            name="my-net",
            vni=4097,
            ipam=[pool],
            options={"encrypted": "true"},
            attachable=True,
            encrypted=True,
            mtu=1450,
        ),
        Allocation(network="abc", address=ip_address("10.0.9.130"), endpoint="ep1", node="n1"),
        EndpointRecord(
            id="ep1",
            network="abc",
            node="n1",
            name="web",
            mac="02:42:0a:00:09:82",
            ipv4=IPv4Interface("10.0.9.130/24"),
            aliases=["www"],
        ),
        SubnetReservation(network="abc", subnet=ip_network("10.0.9.0/24")),
        ServiceRecord(
            id="s1",
            name="web",
            networks=["abc"],
            vips={"abc": ip_address("10.0.9.3")},
            ports=[ServicePort(protocol="udp", target=53, published=5353, mode="host")],
            stickiness="source-ip",
        ),
    ]
    for rec in records:
        assert decode(type(rec), encode(rec)) == rec
    assert decode_kind("network", encode(records[2])) == records[2]
    assert decode_kind("service", encode(records[-1])) == records[-1]
    with pytest.raises(ValueError, match="NetworkKeys"):  # issue 17: an encrypted network's keys have a model now
        decode_kind("key", b"{}")


def test_records_tolerate_unknown_fields_and_reject_bad_values() -> None:
    newer = b'{"network": "abc", "subnet": "10.0.9.0/24", "added_in_v2": 1}'
    assert decode(SubnetReservation, newer).subnet == ip_network("10.0.9.0/24")
    with pytest.raises(ValueError, match="SubnetReservation"):
        decode(SubnetReservation, b'{"network": "abc", "subnet": "10.0.9.1/24"}')
    with pytest.raises(ValueError, match="OverlayNetwork"):
        decode(OverlayNetwork, b'{"id": "a", "name": "n", "vni": 16777216}')
    with pytest.raises(ValueError):
        decode(NodeRecord, b"not json")


def test_parse_duration() -> None:
    assert parse_duration("12h") == 43200
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90
    assert parse_duration("2d") == 172800
    assert parse_duration(30) == 30
    for bad in ("", "12", "h", "12x", "-1h", "0s", "1h foo"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "netd.toml"
    p.write_text(text)
    return p


def test_cluster_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(_write(tmp_path, "")).cluster is None  # single-host, as today
    cfg = load_settings(
        _write(
            tmp_path,
            '[cluster]\netcd_endpoints = ["http://192.0.2.100:2379", '
            '"http://[2001:db8::1]:2379"]\nnode_name = "n1"\n'
            'encryption_key_rotation = "1h30m"\n',
        )
    ).cluster
    assert cfg is not None
    assert cfg.etcd_endpoints[1] == "http://[2001:db8::1]:2379"
    assert (cfg.node_name, cfg.vxlan_port, cfg.lease_ttl, cfg.key_prefix) == ("n1", 4789, 10, "/netd/v1")
    assert cfg.encryption_key_rotation == 5400
    assert cfg.advertise_address is None and not cfg.tls
    assert str(cfg.overlay_address_pools[0].base) == "10.0.0.0/8" and cfg.overlay_address_pools[0].size == 24
    # NETD_CLUSTER__* overrides the file, as for every other key
    monkeypatch.setenv("NETD_CLUSTER__LEASE_TTL", "30")
    monkeypatch.setenv("NETD_CLUSTER__ETCD_ENDPOINTS", '["https://etcd.example:2379"]')
    cfg = load_settings(_write(tmp_path, '[cluster]\netcd_endpoints = ["http://192.0.2.100:2379"]\n')).cluster
    assert cfg is not None and cfg.lease_ttl == 30 and cfg.etcd_endpoints == ["https://etcd.example:2379"]
    assert cfg.tls


def test_cluster_section_from_the_environment_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETD_CLUSTER__ETCD_ENDPOINTS", '["http://192.0.2.100:2379"]')
    cfg = load_settings(_write(tmp_path, "")).cluster
    assert cfg is not None and cfg.etcd_endpoints == ["http://192.0.2.100:2379"]
    assert cfg.node_name  # the host name


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "etcd_endpoints: Field required"),
        ("etcd_endpoints = []", "etcd_endpoints"),
        ('etcd_endpoints = ["192.0.2.1:2379"]', "not an etcd client URL"),
        ('etcd_endpoints = ["http://e:2379"]\nlease_ttl = 1', "lease_ttl"),
        ('etcd_endpoints = ["http://e:2379"]\nvxlan_port = 70000', "vxlan_port"),
        ('etcd_endpoints = ["http://e:2379"]\netcd_cert = "/nonexistent.pem"', "etcd_cert and etcd_key go"),
        ('etcd_endpoints = ["http://e:2379"]\netcd_cacert = "/nonexistent.pem"', "no such file"),
        ('etcd_endpoints = ["http://e:2379"]\nencryption_key_rotation = "soon"', "not a duration"),
        ('etcd_endpoints = ["http://e:2379"]\nnode_name = "a/b"', "node_name"),
        ('etcd_endpoints = ["http://e:2379"]\nadvertise_address = "nope"', "advertise_address"),
        ('etcd_endpoints = ["http://e:2379"]\netcd_endpoint = "x"', "etcd_endpoint: unknown key"),
    ],
)
def test_bad_cluster_config_names_the_key(tmp_path: Path, body: str, reason: str) -> None:
    with pytest.raises(InvalidError, match=reason) as e:
        load_settings(_write(tmp_path, f"[cluster]\n{body}\n"))
    assert "cluster" in e.value.message and "start netd again" in e.value.message


def test_single_host_daemon_does_not_load_the_cluster_code() -> None:
    code = (
        "import sys, netd.daemon, netd.core.config; print(sorted(m for m in sys.modules if m.startswith("
        "('aetcd', 'grpc', 'netd.cluster'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert out.stdout.strip() == "[]"


def test_vxlanid_list_option() -> None:
    from netd.cluster.networks import VXLANID_OPTION, vni_from_options

    assert vni_from_options({}) is None
    assert vni_from_options({VXLANID_OPTION: "4097"}) == 4097
    assert vni_from_options({VXLANID_OPTION: " 1 "}) == 1
    for bad, why in (
        ("0", "out of range"),
        ("16777216", "out of range"),
        ("4097,4098", "give one VNI"),
        ("x", "give one VNI"),
        ("", "give one VNI"),
        ("-5", "give one VNI"),
    ):
        with pytest.raises(InvalidError, match=why) as e:
            vni_from_options({VXLANID_OPTION: bad})
        assert e.value.field == "options"
