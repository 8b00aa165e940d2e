from ipaddress import ip_address, ip_network

import pytest

from netd.core import ipam
from netd.core.errors import ConflictError, InvalidError


def test_gateway_defaults_to_first_host() -> None:
    cfg = ipam.validate_pool("172.30.0.0/24")
    assert cfg.gateway == ip_address("172.30.0.1")


@pytest.mark.parametrize(
    ("subnet", "gateway", "ip_range", "aux", "field"),
    [
        ("172.30.0.0/33", None, None, None, "subnet"),
        ("not-a-cidr", None, None, None, "subnet"),
        ("172.30.0.1/24", None, None, None, "subnet"),  # host bits set
        ("172.30.0.0/24", "172.31.0.1", None, None, "gateway"),
        ("172.30.0.0/24", "172.30.0.255", None, None, "gateway"),
        ("172.30.0.0/24", None, "172.30.1.0/25", None, "ip-range"),
        ("172.30.0.0/24", None, None, {"r": "10.0.0.1"}, "aux-address r"),
        ("172.30.0.0/24", None, None, {"r": "172.30.0.1"}, "aux-address"),
        ("172.30.0.0/31", None, None, None, "subnet"),
        ("fd00::/127", None, None, None, "subnet"),
    ],
)
def test_bad_pools_name_the_field(
    subnet: str, gateway: str | None, ip_range: str | None, aux: dict[str, str] | None, field: str
) -> None:
    with pytest.raises(InvalidError) as e:
        ipam.validate_pool(subnet, gateway, ip_range, aux)
    assert e.value.field == field


def test_host_bits_error_suggests_the_network() -> None:
    with pytest.raises(InvalidError, match=r"did you mean 172.30.0.0/24"):
        ipam.validate_pool("172.30.0.1/24")


def test_allocate_skips_reserved_and_taken_and_honours_range() -> None:
    cfg = ipam.validate_pool("172.30.0.0/24", "172.30.0.1", "172.30.0.128/25", {"my-router": "172.30.0.129"})
    first = ipam.allocate(cfg, set(), network="n")
    assert first == ip_address("172.30.0.128")  # the range's first address, as Docker hands out
    second = ipam.allocate(cfg, {first}, network="n")
    assert second == ip_address("172.30.0.130")  # .129 is the aux-address


def test_allocate_from_a_hint_wraps_around() -> None:
    cfg = ipam.validate_pool("10.9.0.0/29")  # .1 gateway, .2-.6 hosts, .7 broadcast
    taken = {ip_address("10.9.0.2"), ip_address("10.9.0.5"), ip_address("10.9.0.6")}

    def alloc(start: str, extra: tuple[str, ...] = ()) -> str:
        busy = taken | {ip_address(a) for a in extra}
        return str(ipam.allocate(cfg, busy, network="n", start=ip_address(start)))

    assert alloc("10.9.0.4") == "10.9.0.4"
    assert alloc("10.9.0.5") == "10.9.0.3"  # nothing free after the hint: wrapped around
    assert alloc("10.200.0.1") == "10.9.0.3"  # a hint outside the pool: from the start
    assert alloc("fd00::5") == "10.9.0.3"
    with pytest.raises(ConflictError, match="no free address"):
        alloc("10.9.0.5", extra=("10.9.0.3", "10.9.0.4"))


def test_allocate_static() -> None:
    cfg = ipam.validate_pool("172.30.0.0/24")
    assert ipam.allocate(cfg, set(), ip_address("172.30.0.140"), network="n") == ip_address("172.30.0.140")
    with pytest.raises(ConflictError, match="already in use"):
        ipam.allocate(cfg, {ip_address("172.30.0.140")}, ip_address("172.30.0.140"), network="n")
    with pytest.raises(ConflictError, match="reserved"):
        ipam.allocate(cfg, set(), ip_address("172.30.0.1"), network="n")
    with pytest.raises(InvalidError, match="outside subnet"):
        ipam.allocate(cfg, set(), ip_address("10.0.0.1"), network="n")


def test_exhaustion_is_a_clear_conflict() -> None:
    cfg = ipam.validate_pool("10.9.0.0/30")
    ip = ipam.allocate(cfg, set(), network="tiny")
    assert ip == ip_address("10.9.0.2")
    with pytest.raises(ConflictError, match=r"no free address left in subnet 10\.9\.0\.0/30"):
        ipam.allocate(cfg, {ip}, network="tiny")


def test_choose_subnet_avoids_networks_and_host_routes() -> None:
    pools = [(ip_network("172.16.0.0/12"), 16)]
    used = [ip_network("172.16.0.0/16"), ip_network("172.17.5.0/24")]  # e.g. a VPN route inside 172.17/16
    assert ipam.choose_subnet(pools, used) == ip_network("172.18.0.0/16")
    with pytest.raises(ConflictError, match="no free subnet"):
        ipam.choose_subnet([(ip_network("10.0.0.0/24"), 24)], [ip_network("10.0.0.0/8")])


def test_overlapping_names_the_other_network() -> None:
    hit = ipam.overlapping(ip_network("10.0.0.0/24"), {"db": [ip_network("10.0.0.0/16")]})
    assert hit == ("db", ip_network("10.0.0.0/16"))
    assert ipam.overlapping(ip_network("10.1.0.0/24"), {"db": [ip_network("10.0.0.0/16")]}) is None
