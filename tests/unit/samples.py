"""Small desired states the pure unit tests share."""

from __future__ import annotations

from ipaddress import IPv4Interface

from netd.core import ipam
from netd.core.model import DesiredState, Endpoint, Netns, Network

NET_ID = "a" * 64
EP_ID = "e" * 64


def one_endpoint_state(mtu: int | None = 1400) -> DesiredState:
    """Network "app" (br-app, 172.30.0.0/24) with netns "web" connected as 172.30.0.2."""
    net = Network(id=NET_ID, name="app", bridge="br-app", ipam=[ipam.validate_pool("172.30.0.0/24")], mtu=mtu)
    ep = Endpoint(
        id=EP_ID,
        network=net.id,
        netns="web",
        ifname="eth0",
        host_ifname="vethe",
        mac="02:00:00:00:00:01",
        ipv4=IPv4Interface("172.30.0.2/24"),
    )
    return DesiredState(networks={"app": net}, netns={"web": Netns(name="web")}, endpoints={ep.id: ep})
