"""Desired-state builders shared by the firewall unit tests."""

from __future__ import annotations

from ipaddress import ip_network

from netd.core.model import DesiredState, IpamConfig, Network


def net(net_id: str, bridge: str, *subnets: str, **kw: object) -> Network:
    return Network(
        id=net_id,
        name=kw.pop("name", net_id),
        bridge=bridge,
        ipam=[IpamConfig(subnet=ip_network(s)) for s in subnets],
        **kw,
    )


def state(*nets: Network) -> DesiredState:
    return DesiredState(networks={n.name: n for n in nets})


def representative() -> DesiredState:
    """Two plain bridge networks (one dual-stack), one internal, one with icc off."""
    return state(
        net("a1b2c3d4e5f6a7b8", "br-a", "10.90.1.0/24", "fd00:90:1::/64", name="front", enable_ipv6=True),
        net("b2c3d4e5f6a7b8c9", "br-b", "10.90.2.0/24", name="back"),
        net("c3d4e5f6a7b8c9d0", "br-i", "10.90.3.0/24", name="db", internal=True),
        net("d4e5f6a7b8c9d0e1", "br-n", "10.90.4.0/24", name="noicc", icc=False),
    )
