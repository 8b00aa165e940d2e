"""The routing mesh, pure parts: a node's published-port rules (mesh and mode=host), their rendering with the
SNAT to the node's ingress address, the filter's accepts for DNAT'd connections, and the port clash checks."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, ip_address

import pytest

from netd.cluster.ingress import is_sbox, sbox_id
from netd.cluster.records import EndpointRecord, IpamConfig, OverlayNetwork, ServicePort, ServiceRecord
from netd.core.errors import ConflictError, InvalidError
from netd.core.model import DesiredState, Endpoint, Network, PortMapping
from netd.core.request import parse_network_create
from netd.core.ruleset import Accept, Drop, Match
from netd.firewall import lb_iptables, lb_nft
from netd.firewall.lb_model import assign_slots
from netd.firewall.rules import build_ruleset
from netd.multihost.mesh import HostTarget, host_targets, local_port_taken, mesh_lb
from netd.multihost.service_spec import ServiceSpec, check_local_ports, service_port_holders

ING = OverlayNetwork(id="ing", name="ingress", vni=4096, ipam=[IpamConfig(subnet="10.0.0.0/24")], ingress=True)
WEB = ServiceRecord(
    id="s1",
    name="web",
    networks=["n1"],
    ports=[
        ServicePort(target=80, published=8080),
        ServicePort(protocol="udp", target=53, published=5353),
        ServicePort(target=81, published=8081, mode="host"),
        ServicePort(target=82),  # VIP only: nothing on the node
    ],
)
SRC = IPv4Address("10.0.0.9")


def rec(ep_id: str, node: str, ip: str, net: str = "ing", service: str | None = "web") -> EndpointRecord:
    return EndpointRecord(
        id=ep_id, network=net, node=node, mac="02:42:00:00:00:01", ipv4=IPv4Interface(f"{ip}/24"), service=service
    )


TASKS = [
    rec("a1", "a", "10.0.0.3"),
    rec("b1", "b", "10.0.0.4"),
    rec("c1", "c", "10.0.0.5"),  # node c is not alive
    rec("x1", "a", "10.1.0.3", net="n1"),  # the task's service-network endpoint: not a mesh backend
    rec(sbox_id("b"), "b", "10.0.0.2", service=None),
]


def test_mesh_ports_spread_over_the_tasks_ingress_addresses_on_alive_nodes() -> None:
    rs = mesh_lb([WEB], TASKS, {"a", "b"}, "n", ING, SRC)  # node n has no task: it answers all the same
    assert rs.published == {("tcp", 8080): "mesh-web-tcp-8080", ("udp", 5353): "mesh-web-udp-5353"}
    eps = rs.spreads["mesh-web-tcp-8080"].endpoints
    assert [(str(e.address), e.port) for e in eps] == [("10.0.0.3", 80), ("10.0.0.4", 80)]
    assert rs.spreads["mesh-web-udp-5353"].endpoints[0].proto == "udp"
    assert rs.snat_to == SRC and not rs.vips and rs.spreads["mesh-web-tcp-8080"].masquerade
    # without its own ingress address a node has no mesh yet (replies could not come back)
    assert mesh_lb([WEB], TASKS, {"a", "b"}, "n", ING, None).empty
    assert mesh_lb([WEB], TASKS, {"a", "b"}, "n", None, SRC).empty
    # stickiness=source-ip: jhash, as for a VIP
    sticky = WEB.model_copy(update={"stickiness": "source-ip"})
    assert mesh_lb([sticky], TASKS, {"a", "b"}, "n", ING, SRC).sticky()


def test_mode_host_only_local_tasks_no_snat() -> None:
    local = [
        HostTarget("x1", "web", IPv4Address("172.18.0.3")),
        HostTarget("o1", "other", IPv4Address("172.18.0.4")),
    ]
    rs = mesh_lb([WEB], TASKS, {"a", "b"}, "a", ING, SRC, local)
    host = rs.spreads[rs.published[("tcp", 8081)]]
    assert host.kind == "host" and not host.masquerade
    assert [(str(e.address), e.port) for e in host.endpoints] == [("172.18.0.3", 81)]
    # a node without a local task: the host port is not there at all
    assert ("tcp", 8081) not in mesh_lb([WEB], TASKS, {"a", "b"}, "b", ING, SRC).published


def test_a_port_published_with_p_here_is_left_out() -> None:
    rs = mesh_lb([WEB], TASKS, {"a", "b"}, "n", ING, SRC, taken={("tcp", 8080)})
    assert ("tcp", 8080) not in rs.published and ("udp", 5353) in rs.published


def test_rendering_snats_to_the_node_ingress_address() -> None:
    rs = mesh_lb([WEB], TASKS, {"a", "b"}, "n", ING, SRC)
    slots = assign_slots(None, rs)
    nft = lb_nft.render_full(rs, slots, "t1")
    assert "snat to 10.0.0.9" in nft and "masquerade" not in nft
    assert "fib daddr type local meta l4proto . th dport vmap @published" in nft
    assert "tcp . 8080 : goto mesh-web-tcp-8080" in nft
    ipt = lb_iptables.render_full(rs, "t1", "")
    assert "-A NETDLB-POST -j SNAT --to-source 10.0.0.9" in ipt and "MASQUERADE" not in ipt
    assert "-m addrtype --dst-type LOCAL -p udp -m udp --dport 5353" in ipt
    # the node's ingress address changes (node rm, then back): the delta rewrites postrouting
    other = mesh_lb([WEB], TASKS, {"a", "b"}, "n", ING, IPv4Address("10.0.0.10"))
    delta = lb_nft.render_delta(rs, slots, other, assign_slots(slots, other), "t2")
    assert "flush chain ip netd-lb postrouting" in delta and "snat to 10.0.0.10" in delta
    same = lb_nft.render_delta(rs, slots, rs, slots, "t3")
    assert "postrouting" not in same
    # a task leaves: one slot and its endpoint chain, nothing else
    fewer = mesh_lb([WEB], TASKS[1:], {"a", "b"}, "n", ING, SRC)
    gone = lb_nft.render_delta(rs, slots, fewer, assign_slots(slots, fewer), "t4")
    assert "delete chain ip netd-lb ep-10.0.0.3-tcp-80" in gone and "add table" not in gone


def _net(net_id: str, name: str, driver: str, subnet: str, **kw: object) -> Network:
    return Network(
        id=net_id, name=name, driver=driver, bridge=f"br-{net_id}", ipam=[IpamConfig(subnet=subnet)], **kw
    )  # type: ignore[arg-type]


def test_filter_lets_dnatted_connections_into_ingress_and_gwbridge() -> None:
    ing = _net("i1", "ingress", "overlay", "10.0.0.0/24", ingress=True)
    ov = _net("o1", "ov1", "overlay", "10.1.0.0/24")
    gw = _net("g1", "docker_gwbridge", "bridge", "172.18.0.0/16", icc=False)
    rs = build_ruleset(DesiredState(networks={n.name: n for n in (ing, ov, gw)}))
    first = [(r.match, r.verdict) for r in rs.ip.chain("forward").rules[:4]]
    assert first == [
        (Match(oif="br-g1", ct_dnat=True), Accept()),
        (Match(iif="br-g1", ct_dnat=True), Accept()),
        (Match(oif="br-i1", ct_dnat=True), Accept()),
        (Match(iif="br-i1", ct_dnat=True), Accept()),
    ]
    # a plain overlay network stays closed both ways; nothing per network changes
    assert all(r.match.ct_dnat is False for r in rs.ip.chain("forward").rules[4:])
    assert [(r.match, r.verdict) for r in rs.ip.chain("from-i1").rules] == [(Match(), Drop())]
    assert build_ruleset(DesiredState(networks={"ov1": ov})).ip.chain("forward").rules[0].match == Match()
    assert (
        build_ruleset(DesiredState(networks={"ingress": ing}), ip_forward=False).ip.chain("forward").rules[0].match
        == Match()
    )


def _state_with_p(port: int) -> DesiredState:
    br = _net("b1", "br1", "bridge", "172.31.9.0/24")
    ep = Endpoint(
        id="e1",
        network="b1",
        netns="pub",
        ifname="eth0",
        host_ifname="vethe1",
        mac="02:00:00:00:00:01",
        ports=[PortMapping(host_port=port, container_port=80)],
    )
    return DesiredState(networks={"br1": br}, endpoints={"e1": ep})


def test_p_ports_and_service_ports_refuse_each_other() -> None:
    spec = ServiceSpec(name="web", networks=["ov1"], ports=[ServicePort(target=80, published=9100)])
    with pytest.raises(ConflictError, match=r"PublishedPort: 9100/tcp is published on this node by netns 'pub'"):
        check_local_ports(spec, _state_with_p(9100))
    check_local_ports(spec, _state_with_p(9101))
    assert local_port_taken(_state_with_p(9100)) == {("tcp", 9100)}
    (holder,) = service_port_holders([WEB.model_copy(update={"ports": [ServicePort(target=80, published=8080)]})])
    assert holder.mapping.host_port == 8080 and "service 'web' (routing mesh)" in holder.who


def test_ingress_flag_needs_overlay_and_sbox_ids() -> None:
    with pytest.raises(InvalidError, match="-d overlay"):
        parse_network_create({"Name": "x", "Ingress": True})
    assert parse_network_create({"Name": "x", "Driver": "overlay", "Ingress": True}).ingress
    assert is_sbox(sbox_id("node1")) and not is_sbox("0123abcd")
    assert host_targets(DesiredState()) == []
    assert ip_address("10.0.0.9") == SRC
