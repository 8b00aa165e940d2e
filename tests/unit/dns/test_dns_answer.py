"""What the per-network resolver answers, from a desired state (pure: no sockets)."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest

from netd.core.model import DesiredState, Endpoint, IpamConfig, Netns, Network
from netd.dns.answer import answer, build_index, endpoint_names, listen_addresses, resolver_address
from netd.dns.resolvconf import HostResolv
from netd.dns.server import DnsServer
from netd.dns.upstream import Forwarder, choose_upstreams


def _net(name: str, subnet: str, **kw: object) -> Network:
    sub = ip_network(subnet)
    gw = next(sub.hosts())
    return Network(
        id=f"id-{name}", name=name, bridge=f"br-{name}", ipam=[IpamConfig(subnet=sub, gateway=gw)], **kw
    )


def _ep(net: Network, ns: str | None, addr: str, *aliases: str, path: str | None = None) -> Endpoint:
    return Endpoint(
        id=f"ep-{net.name}-{ns or path}",
        network=net.id,
        netns=ns,
        netns_path=path,
        ifname="eth0",
        host_ifname=f"v{ns}",
        mac="02:00:00:00:00:01",
        ipv4=ip_interface(addr),
        aliases=list(aliases),
    )


@pytest.fixture
def state() -> DesiredState:
    a = _net("a", "172.31.1.0/24")
    b = _net("b", "172.31.2.0/24")
    internal = _net("in", "172.31.3.0/24", internal=True)
    default = _net("bridge", "172.17.0.0/16", is_default=True)
    eps = [
        _ep(a, "web", "172.31.1.2/24", "www", "svc"),
        _ep(a, "api", "172.31.1.3/24", "svc"),
        _ep(a, None, "172.31.1.4/24", "ext", path="/proc/1/ns/net"),
        _ep(b, "db", "172.31.2.2/24"),
        _ep(internal, "vault", "172.31.3.2/24"),
        _ep(default, "old", "172.17.0.2/16"),
    ]
    return DesiredState(
        networks={n.name: n for n in (a, b, internal, default)},
        netns={n: Netns(name=n) for n in ("web", "api", "db", "vault", "old")},
        endpoints={e.id: e for e in eps},
    )


def _ask(state: DesiredState, gw: str, name: str, rdtype: str = "A", turn: int = 0) -> dns.message.Message | None:
    idx = build_index(state)[ip_address(gw)]
    return answer(dns.message.make_query(name, rdtype), idx, turn)


def _data(r: dns.message.Message | None) -> list[str]:
    assert r is not None
    return [rd.to_text() for rrset in r.answer for rd in rrset]


def test_listeners_only_for_user_defined_bridges(state: DesiredState) -> None:
    assert {str(a): n for a, n in listen_addresses(state).items()} == {
        "172.31.1.1": "a",
        "172.31.2.1": "b",
        "172.31.3.1": "in",
    }
    assert resolver_address(state.networks["bridge"]) is None
    assert str(resolver_address(state.networks["a"])) == "172.31.1.1"


def test_names_aliases_and_rotation(state: DesiredState) -> None:
    assert _data(_ask(state, "172.31.1.1", "web")) == ["172.31.1.2"]
    assert _data(_ask(state, "172.31.1.1", "WWW.")) == ["172.31.1.2"]
    assert _data(_ask(state, "172.31.1.1", "ext")) == ["172.31.1.4"]
    assert _data(_ask(state, "172.31.1.1", "svc", turn=0)) == ["172.31.1.2", "172.31.1.3"]
    assert _data(_ask(state, "172.31.1.1", "svc", turn=1)) == ["172.31.1.3", "172.31.1.2"]
    r = _ask(state, "172.31.1.1", "web")
    assert r is not None and r.flags & dns.flags.AA and r.flags & dns.flags.RA


def test_known_name_other_type_is_nodata(state: DesiredState) -> None:
    r = _ask(state, "172.31.1.1", "web", "AAAA")
    assert r is not None and r.rcode() == dns.rcode.NOERROR and not r.answer
    r = _ask(state, "172.31.1.1", "web", "MX")
    assert r is not None and r.rcode() == dns.rcode.NOERROR and not r.answer


def test_other_networks_names_are_nxdomain(state: DesiredState) -> None:
    r = _ask(state, "172.31.1.1", "db")
    assert r is not None and r.rcode() == dns.rcode.NXDOMAIN
    r = _ask(state, "172.31.2.1", "web")
    assert r is not None and r.rcode() == dns.rcode.NXDOMAIN
    assert _data(_ask(state, "172.31.2.1", "db")) == ["172.31.2.2"]


def test_external_names_are_forwarded(state: DesiredState) -> None:
    assert _ask(state, "172.31.1.1", "example.com") is None
    assert _ask(state, "172.31.1.1", "db", "MX") is None  # only A/AAAA single labels are kept local
    assert _ask(state, "172.31.1.1", "1.1.1.1.in-addr.arpa", "PTR") is None


def test_ptr(state: DesiredState) -> None:
    assert _data(_ask(state, "172.31.1.1", "2.1.31.172.in-addr.arpa", "PTR")) == ["web."]
    assert _data(_ask(state, "172.31.1.1", "4.1.31.172.in-addr.arpa", "PTR")) == ["ext."]
    r = _ask(state, "172.31.1.1", "9.1.31.172.in-addr.arpa", "PTR")
    assert r is not None and r.rcode() == dns.rcode.NXDOMAIN
    assert _ask(state, "172.31.1.1", "2.2.31.172.in-addr.arpa", "PTR") is None  # b's: not a's to answer


def test_bad_opcode_and_questions(state: DesiredState) -> None:
    idx = build_index(state)[ip_address("172.31.1.1")]
    q = dns.message.make_query("web", "A")
    q.set_opcode(dns.opcode.NOTIFY)
    r = answer(q, idx)
    assert r is not None and r.rcode() == dns.rcode.NOTIMP


def test_endpoint_names() -> None:
    net = _net("a", "172.31.1.0/24")
    assert endpoint_names(_ep(net, "Web", "172.31.1.2/24", "www", "web")) == ["web", "www"]
    assert endpoint_names(_ep(net, None, "172.31.1.2/24", "x", path="/proc/1/ns/net")) == ["x"]


# -- the server's per-packet decision (DnsServer.handle: no sockets involved) ----------------------------------


def _server(state: DesiredState) -> DnsServer:
    return DnsServer(lambda: state, Forwarder([]))


def _handle(
    srv: DnsServer, q: dns.message.Message, local: str, peer: str, tcp: bool = False
) -> tuple[bytes | None, dns.message.Message | None]:
    return srv.handle(q.to_wire(), ip_address(local), peer, tcp)


def test_handle_answers_forwards_and_refuses(state: DesiredState) -> None:
    srv = _server(state)
    now, fwd = _handle(srv, dns.message.make_query("web", "A"), "172.31.1.1", "172.31.1.3")
    assert now is not None and fwd is None and _data(dns.message.from_wire(now)) == ["172.31.1.2"]
    now, fwd = _handle(srv, dns.message.make_query("example.com", "A"), "172.31.1.1", "172.31.1.3")
    assert now is None and fwd is not None
    # from outside the network (another network's endpoint, the uplink): refused, no open resolver
    now, _ = _handle(srv, dns.message.make_query("web", "A"), "172.31.1.1", "172.31.2.2")
    assert now is not None and dns.message.from_wire(now).rcode() == dns.rcode.REFUSED
    # an internal network does not forward
    now, fwd = _handle(srv, dns.message.make_query("example.com", "A"), "172.31.3.1", "172.31.3.2")
    assert fwd is None and now is not None and dns.message.from_wire(now).rcode() == dns.rcode.REFUSED
    # an address no network has (any more)
    now, _ = _handle(srv, dns.message.make_query("web", "A"), "172.31.9.1", "172.31.9.2")
    assert now is not None and dns.message.from_wire(now).rcode() == dns.rcode.REFUSED


def test_handle_garbage_and_responses(state: DesiredState) -> None:
    srv = _server(state)
    now, _ = srv.handle(b"\x12\x34" + b"\x01" * 20, ip_address("172.31.1.1"), "172.31.1.3")
    assert now is not None
    err = dns.message.from_wire(now)
    assert err.id == 0x1234 and err.rcode() == dns.rcode.FORMERR
    assert srv.handle(b"\x00", ip_address("172.31.1.1"), "172.31.1.3") == (None, None)
    resp = dns.message.make_response(dns.message.make_query("web", "A"))
    assert srv.handle(resp.to_wire(), ip_address("172.31.1.1"), "172.31.1.3") == (None, None)


def test_handle_truncates_big_udp_answers_only(state: DesiredState) -> None:
    a = state.networks["a"]
    for i in range(10, 110):
        ep = _ep(a, None, f"172.31.1.{i}/24", "many", path=f"/proc/{i}/ns/net")
        state.endpoints[ep.id] = ep
    srv = _server(state)
    now, _ = _handle(srv, dns.message.make_query("many", "A", use_edns=False), "172.31.1.1", "172.31.1.3")
    assert now is not None and len(now) <= 512 and dns.message.from_wire(now).flags & dns.flags.TC
    now, _ = _handle(srv, dns.message.make_query("many", "A"), "172.31.1.1", "172.31.1.3", tcp=True)
    assert now is not None and len(_data(dns.message.from_wire(now))) == 100


def test_index_follows_the_state_object(state: DesiredState) -> None:
    holder = {"s": state}
    srv = DnsServer(lambda: holder["s"], Forwarder([]))
    q = dns.message.make_query("newbie", "A")
    now, _ = _handle(srv, q, "172.31.1.1", "172.31.1.3")
    assert now is not None and dns.message.from_wire(now).rcode() == dns.rcode.NXDOMAIN
    new = state.model_copy(deep=True)
    ep = _ep(new.networks["a"], "newbie", "172.31.1.50/24")
    new.endpoints[ep.id] = ep
    holder["s"] = new
    now, _ = _handle(srv, q, "172.31.1.1", "172.31.1.3")
    assert now is not None and _data(dns.message.from_wire(now)) == ["172.31.1.50"]


def test_choose_upstreams() -> None:
    host = HostResolv(nameservers=[ip_address("127.0.0.53"), ip_address("192.0.2.1"), ip_address("::1")])
    assert [str(a) for a in choose_upstreams([], host)] == ["192.0.2.1"]
    assert [str(a) for a in choose_upstreams([ip_address("198.51.100.1")], host)] == ["198.51.100.1"]
    assert choose_upstreams([], HostResolv(nameservers=[ip_address("127.0.0.53")])) == []
