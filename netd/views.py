"""JSON views of the desired state with Docker's field names (pure)."""

from __future__ import annotations

from typing import Any

from netd.core.model import DesiredState, Endpoint, Netns, Network
from netd.dns.answer import resolver_address
from netd.dns.nsindex import NS_RESOLVER, serves_in_ns
from netd.drivers import get_driver


def endpoint_name(ep: Endpoint) -> str:
    return ep.netns if ep.netns is not None else (ep.netns_path or "")


def endpoint_view(ep: Endpoint, net: Network) -> dict[str, Any]:
    p4 = net.pool(4)
    p6 = net.pool(6)
    resolver = NS_RESOLVER if serves_in_ns(net) else resolver_address(net)
    gw4 = "" if net.internal or p4 is None or not ep.default_route else str(net.default_gateway4 or p4.gateway)
    return {
        "Name": endpoint_name(ep),
        "EndpointID": ep.id,
        "Network": net.name,
        "Netns": ep.netns,
        "NetnsPath": ep.netns_path,
        "Interface": ep.ifname,
        "HostInterface": ep.host_ifname,
        "MacAddress": ep.mac,
        "IPv4Address": str(ep.ipv4) if ep.ipv4 else "",
        "IPv6Address": str(ep.ipv6) if ep.ipv6 else "",
        "Gateway": gw4,
        "IPv6Gateway": str(p6.gateway) if p6 is not None and p6.gateway and ep.default_route else "",
        "Aliases": list(ep.aliases),
        "ContainerID": ep.container_id or "",
        "GwPriority": ep.gw_priority,
        **({"Service": ep.service} if ep.service else {}),  # a service's task (cluster mode)
        # the network's DNS resolver (its gateway; 127.0.0.11 inside the namespace on macvlan/ipvlan); a runtime
        # puts it in the --netns-path namespace's resolv.conf
        "Resolver": str(resolver) if resolver is not None else "",
        "Ports": [
            {
                "HostIp": str(p.host_ip) if p.host_ip else "",
                "HostPort": p.host_port,
                "ContainerPort": p.container_port,
                "Proto": p.proto,
            }
            for p in ep.ports
        ],
    }


def network_view(net: Network, state: DesiredState) -> dict[str, Any]:
    containers = {}
    for ep in state.endpoints_of(net.id):
        v = endpoint_view(ep, net)
        containers[ep.id] = {k: v[k] for k in ("Name", "EndpointID", "MacAddress", "IPv4Address", "IPv6Address")}
        containers[ep.id]["Aliases"] = v["Aliases"]
        containers[ep.id]["Ports"] = v["Ports"]  # published ports, with the host ports netd picked
        for key in ("ContainerID", "NetnsPath", "Netns", "Interface"):  # what the CNI plugin's DEL/GC look up
            containers[ep.id][key] = v[key]
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": get_driver(net).features(net).scope,
        "Driver": net.driver,
        "EnableIPv6": net.enable_ipv6,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [
                {
                    "Subnet": str(c.subnet),
                    "Gateway": str(c.gateway) if c.gateway else "",
                    **({"IPRange": str(c.ip_range)} if c.ip_range else {}),
                    **(
                        {"AuxiliaryAddresses": {k: str(v) for k, v in c.aux_addresses.items()}}
                        if c.aux_addresses
                        else {}
                    ),
                }
                for c in net.ipam
            ],
        },
        "Internal": net.internal,
        "Attachable": net.attachable if net.driver == "overlay" else True,
        "Ingress": net.ingress,
        "Containers": containers,
        "Options": dict(net.options),
        "Labels": dict(net.labels),
        "Bridge": net.bridge,
        "Default": net.is_default,
        **({"VNI": net.vni, "VxlanDevice": net.vxlan, "MTU": net.mtu} if net.vni is not None else {}),
    }


def netns_view(ns: Netns, path: str, state: DesiredState) -> dict[str, Any]:
    eps = []
    for ep in state.endpoints_in(f"netns:{ns.name}"):
        net = state.network_by_id(ep.network)
        if net is not None:
            eps.append(endpoint_view(ep, net))
    return {"Name": ns.name, "Path": path, "Network": ns.network or "", "Created": ns.created, "Endpoints": eps}
