"""Issue 12 items 5 and 7: a Docker user's daemon.json and Docker-style TOML keys (each failed on main)."""

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Network
from pathlib import Path

import pytest

from netd.core.config import load_settings
from netd.core.errors import InvalidError


def test_daemon_json_is_read_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "daemon.json"
    cfg.write_text(
        json.dumps(
            {
                "bip": "192.168.1.1/24",
                "fixed-cidr": "192.168.1.5/25",
                "fixed-cidr-v6": "2001:db8::/64",
                "mtu": 1400,
                "default-gateway": "192.168.1.254",
                "dns": ["10.20.1.2", "10.20.1.3"],
                "ipv6": True,
                "icc": False,
                "ip-masq": False,
                "ip-forward": False,
                "iptables": False,
                "default-address-pools": [{"base": "10.99.0.0/16", "size": 24}],
                "storage-driver": "overlay2",
                "log-driver": "journald",
            }
        )
    )
    s = load_settings(cfg)
    b = s.default_bridge
    assert b.bip == IPv4Interface("192.168.1.1/24")
    assert b.fixed_cidr == IPv4Network("192.168.1.0/25")  # masked, as dockerd does
    assert b.fixed_cidr_v6 == IPv6Network("2001:db8::/64")
    assert b.mtu == 1400 and b.icc is False and b.ip_masq is False and b.ipv6 is True
    assert b.default_gateway == IPv4Address("192.168.1.254")
    assert [str(d) for d in b.dns] == ["10.20.1.2", "10.20.1.3"]
    assert [str(d) for d in s.dns] == ["10.20.1.2", "10.20.1.3"]
    assert s.ip_forward is False
    assert s.firewall.backend == "none"
    assert [str(p.base) for p in s.default_address_pools] == ["10.99.0.0/16"]
    out = capsys.readouterr().out
    assert "daemon_json_keys_ignored" in out and "storage-driver" in out and "log-driver" in out


def test_daemon_json_bridge_none_and_iptables_true(tmp_path: Path) -> None:
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"bridge": "none", "iptables": true}')
    s = load_settings(cfg)
    assert s.default_bridge.enabled is False
    assert s.firewall.backend == "auto"


def test_daemon_json_bad_value_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"mtu": 10}')
    with pytest.raises(InvalidError, match=r"default_bridge\.mtu"):
        load_settings(cfg)
    cfg.write_text("[1, 2]")
    with pytest.raises(InvalidError, match="JSON object"):
        load_settings(cfg)
    cfg.write_text("{nope")
    with pytest.raises(InvalidError, match="not valid JSON"):
        load_settings(cfg)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('bip = "172.18.0.1/16"\n', "[default_bridge] bip"),
        ("mtu = 1400\n", "[default_bridge] mtu"),
        ("ipv6 = true\n", "[default_bridge] ipv6"),
        ('fixed-cidr = "10.0.0.0/24"\n', "[default_bridge] fixed-cidr"),
        ("ip-masq = false\n", "[default_bridge] ip-masq"),
        ("iptables = false\n", '[firewall] backend = "iptables"'),
        ('storage-driver = "overlay2"\n', "Docker daemon.json key netd does not use"),
    ],
)
def test_misplaced_toml_key_says_where_it_belongs(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "netd.toml"
    cfg.write_text(text)
    with pytest.raises(InvalidError) as e:
        load_settings(cfg)
    assert needle in e.value.message


def test_toml_fixed_cidr_with_host_bits_is_masked(tmp_path: Path) -> None:
    cfg = tmp_path / "netd.toml"
    cfg.write_text('[default_bridge]\nbip = "192.168.1.1/24"\nfixed-cidr = "192.168.1.5/25"\n')
    assert load_settings(cfg).default_bridge.fixed_cidr == IPv4Network("192.168.1.0/25")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('bip = "10.55.0.1/24"\ndefault-gateway = "10.56.0.1"\n', "default-gateway 10.56.0.1 is outside"),
        ('ipv6 = true\nfixed-cidr-v6 = "fd00:1::/64"\ndefault-gateway-v6 = "fd00:2::1"\n', "default-gateway-v6"),
    ],
)
def test_default_gateway_outside_the_subnet_is_refused_at_load(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "netd.toml"
    cfg.write_text("[default_bridge]\n" + text)
    with pytest.raises(InvalidError, match=needle):
        load_settings(cfg)
