"""A desired state with published ports of every kind, shared by the ports unit tests."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network

from netd.core.model import DesiredState, Endpoint, IpamConfig, Network, PortMapping


def net(net_id: str, bridge: str, *subnets: str, **kw: object) -> Network:
    ipam = [IpamConfig(subnet=ip_network(s)) for s in subnets]
    return Network(id=net_id, name=str(kw.pop("name", net_id)), bridge=bridge, ipam=ipam, **kw)  # type: ignore[arg-type]


def ep(ep_id: str, network: str, v4: str | None, v6: str | None, *ports: PortMapping) -> Endpoint:
    return Endpoint(
        id=ep_id,
        network=network,
        netns=ep_id,
        ifname="eth0",
        host_ifname=f"v{ep_id}",
        mac="02:00:00:00:00:01",
        ipv4=ip_interface(v4) if v4 else None,
        ipv6=ip_interface(v6) if v6 else None,
        ports=list(ports),
    )


def pm(host_port: int, container_port: int, proto: str = "tcp", ip: str | None = None) -> PortMapping:
    return PortMapping(
        host_ip=ip_address(ip) if ip else None, host_port=host_port, container_port=container_port, proto=proto
    )


def ports_state() -> DesiredState:
    """A dual-stack network publishing on every kind of host address, an IPv4 one, and an internal one."""
    nets = [
        net("a1b2c3d4e5f6", "br-a", "10.90.1.0/24", "fd00:90:1::/64", name="front", enable_ipv6=True),
        net("b2c3d4e5f6a7", "br-b", "10.90.2.0/24", name="back"),
        net("c3d4e5f6a7b8", "br-i", "10.90.3.0/24", name="db", internal=True),
    ]
    eps = [
        ep(
            "web",
            "a1b2c3d4e5f6",
            "10.90.1.2/24",
            "fd00:90:1::2/64",
            pm(8080, 80),
            pm(8081, 81, "udp", "127.0.0.1"),
            pm(8082, 82, ip="::"),
            pm(8083, 83, "sctp", "fd99:255::1"),
        ),
        ep("pg", "b2c3d4e5f6a7", "10.90.2.2/24", None, pm(5432, 5432, ip="0.0.0.0")),
        ep("plain", "b2c3d4e5f6a7", "10.90.2.3/24", None),
    ]
    return DesiredState(networks={n.name: n for n in nets}, endpoints={e.id: e for e in eps})
