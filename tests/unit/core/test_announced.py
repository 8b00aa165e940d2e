"""Which addresses a new veth endpoint announces (netd.drivers.bridge.announced): only those a peer or the host
may hold in its neighbour cache with another MAC."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface, IPv6Interface
from pathlib import Path

from netd.core import ipam
from netd.core.config import DefaultBridge, Settings
from netd.core.model import DesiredState, Endpoint, Network
from netd.core.naming import endpoint_mac
from netd.drivers.bridge import announced
from netd.engine.networks import NetworkBuilder

V4 = IPv4Interface("172.30.0.5/24")
V6 = IPv6Interface("fd00:30::5/64")


def _net(**kw: object) -> Network:
    return Network(id="a" * 64, name="n", bridge="br-n", ipam=[ipam.validate_pool("172.30.0.0/24")], **kw)  # type: ignore[arg-type]


def _ep(mac: str | None = None, v6: bool = False) -> Endpoint:
    return Endpoint(
        id="e" * 64,
        network="a" * 64,
        netns="x",
        ifname="eth0",
        host_ifname="vethe",
        mac=mac or endpoint_mac("e" * 64, V4.ip),
        ipv4=V4,
        ipv6=V6 if v6 else None,
    )


def test_a_derived_mac_on_a_bridge_with_a_known_history_announces_only_ipv6() -> None:
    net = _net(custom_macs=False)
    assert announced(_ep(), net) == ()
    assert announced(_ep(v6=True), net) == (V6,)


def test_everything_is_announced_where_a_cached_entry_may_be_wrong() -> None:
    assert announced(_ep(mac="02:aa:bb:cc:dd:05"), _net(custom_macs=False)) == (V4,)  # its own MAC
    assert announced(_ep(), _net(custom_macs=True)) == (V4,)  # an earlier endpoint had one
    assert announced(_ep(), _net()) == (V4,)  # a network from an older state: history unknown
    assert announced(_ep(), _net(custom_macs=False, bridge_adopted=True)) == (V4,)  # other hosts on it
    assert announced(_ep(v6=True), _net(custom_macs=False, driver="overlay")) == (V4, V6)  # peers on other nodes


def test_the_default_bridge_keeps_its_history_when_it_is_built_again(tmp_path: Path) -> None:
    """A start or a reload builds the default network anew from the config: its custom_macs must carry over."""
    settings = Settings(state_dir=tmp_path, default_bridge=DefaultBridge(bip=IPv4Interface("172.31.0.1/24")))
    builder = NetworkBuilder(settings, kernel=None)  # type: ignore[arg-type]  # bip given: no kernel read
    fresh = asyncio.run(builder.default_network(None, DesiredState()))
    assert fresh.custom_macs is False
    for history in (True, None):
        current = fresh.model_copy(update={"custom_macs": history})
        assert asyncio.run(builder.default_network(current, DesiredState())).custom_macs is history
