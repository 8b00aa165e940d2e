"""The raw requests a connect sends (netd.kernel.rtwrite), decoded back by pyroute2's message classes: an
independent decoder (the integration tests prove the kernel takes them)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_interface
from typing import Any

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netd.kernel import nsid, rtwrite


def _decode(cls: Any, req: rtwrite.Request) -> Any:
    msg = cls(rtwrite.frame(req, 7))
    msg.decode()
    return msg


def test_veth_create_names_both_ends_the_master_and_the_peer_namespace() -> None:
    req = rtwrite.new_veth("vethab12", "eth0", 9, 4, "02:42:ac:11:00:02", mtu=1400)
    msg = _decode(ifinfmsg, req)
    assert msg["header"]["type"] == 16 and msg["header"]["sequence_number"] == 7
    flags = msg["header"]["flags"]
    assert flags & rtwrite.NLM_F_CREATE and flags & rtwrite.NLM_F_EXCL and flags & rtwrite.NLM_F_ACK
    assert msg.get_attr("IFLA_IFNAME") == "vethab12"
    assert msg.get_attr("IFLA_MASTER") == 4 and msg.get_attr("IFLA_MTU") == 1400
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth0"
    assert peer.get_attr("IFLA_NET_NS_FD") == 9
    assert peer.get_attr("IFLA_ADDRESS") == "02:42:ac:11:00:02" and peer.get_attr("IFLA_MTU") == 1400


def test_set_up_with_the_alias() -> None:
    msg = _decode(ifinfmsg, rtwrite.set_up(12, "netd:abc"))
    assert msg["index"] == 12 and msg["flags"] & 1 and msg["change"] & 1
    assert msg.get_attr("IFLA_IFALIAS") == "netd:abc"


def test_addresses_ipv6_without_dad() -> None:
    v4 = _decode(ifaddrmsg, rtwrite.add_address(5, ip_interface("172.30.0.5/24")))
    assert (v4["family"], v4["prefixlen"], v4["index"], v4["flags"]) == (2, 24, 5, 0)
    assert v4.get_attr("IFA_LOCAL") == v4.get_attr("IFA_ADDRESS") == "172.30.0.5"
    v6 = _decode(ifaddrmsg, rtwrite.add_address(5, ip_interface("fd00::5/64")))
    assert (v6["family"], v6["prefixlen"], v6["flags"]) == (10, 64, rtwrite.IFA_F_NODAD)
    assert v6.get_attr("IFA_ADDRESS") == "fd00::5"


def test_default_routes_replace_via_the_gateway_on_the_link() -> None:
    for gw in (IPv4Address("172.30.0.1"), IPv6Address("fd00::1")):
        msg = _decode(rtmsg, rtwrite.replace_default_route(5, gw))
        assert msg["dst_len"] == 0 and msg["table"] == 254 and msg["type"] == 1
        assert msg["header"]["flags"] & rtwrite.NLM_F_REPLACE
        assert msg.get_attr("RTA_GATEWAY") == str(gw) and msg.get_attr("RTA_OIF") == 5


def test_get_link_in_another_namespace_by_its_id() -> None:
    msg = ifinfmsg(nsid._get_link_in(3, "eth0", 1))
    msg.decode()
    assert msg["header"]["type"] == 18
    assert msg.get_attr("IFLA_IFNAME") == "eth0" and msg.get_attr("IFLA_IF_NETNSID") == 3  # its older name
