"""Issue 12.1: an address reused by a new endpoint answers at once from every peer and from the host.

Peers and the host cache the old endpoint's MAC as REACHABLE; the new endpoint must answer to that entry (its
MAC comes from the IPv4 address, as Docker's) so traffic is not black-holed until the entry ages out."""

from __future__ import annotations

from netdtest import Host, in_ns, running_host

REUSED = "172.30.90.5"


def _answers(path: str, addr: str) -> bool:
    """One echo with a one-second deadline: the neighbour entry must already be right."""
    return in_ns(path, "ping", "-n", "-q", "-c", "1", "-w", "1", addr, check=False).returncode == 0


def _connect(host: Host, ns: str, ip: str | None = None) -> dict[str, object]:
    if ns not in [n["Name"] for n in host.api.ok("GET", "/v1/netns")]:
        host.api.ok("POST", "/v1/netns", {"Name": ns})
    cfg: dict[str, object] = {"IPAMConfig": {"IPv4Address": ip}} if ip else {}
    return host.api.ok("POST", "/v1/networks/reuse/connect", {"Netns": ns, "EndpointConfig": cfg})  # type: ignore[no-any-return]


def _warm(host: Host, peer: str) -> None:
    """Peer and host talk to the address, so both hold its MAC as REACHABLE."""
    for path in (host.ns(peer), host.path):
        assert in_ns(path, "ping", "-n", "-q", "-c", "1", "-w", "5", REUSED, check=False).returncode == 0
        neigh = in_ns(path, "ip", "neigh", "show", REUSED).stdout
        assert "lladdr" in neigh, neigh


def test_reused_address_answers_at_once_after_netns_rm(tmp_path: object) -> None:
    with running_host(tmp_path) as host:  # type: ignore[arg-type]
        host.api.ok("POST", "/v1/networks", {"Name": "reuse", "IPAM": {"Config": [{"Subnet": "172.30.90.0/24"}]}})
        _connect(host, "p")
        a = _connect(host, "a", REUSED)
        assert a["MacAddress"] == "02:42:ac:1e:5a:05"  # Docker's: 02:42 and the address
        _warm(host, "p")
        host.api.ok("DELETE", "/v1/netns/a")
        b = _connect(host, "b", REUSED)
        assert b["MacAddress"] == a["MacAddress"]
        assert _answers(host.ns("p"), REUSED)
        assert _answers(host.path, REUSED)
        # disconnect + connect of one namespace, same address
        host.api.ok("POST", "/v1/networks/reuse/disconnect", {"Netns": "b"})
        _connect(host, "b", REUSED)
        assert _answers(host.ns("p"), REUSED)
        assert _answers(host.path, REUSED)


REUSED6 = "fd00:5a::5"


def _answers6(path: str) -> bool:
    return in_ns(path, "ping", "-6", "-n", "-q", "-c", "1", "-w", "1", REUSED6, check=False).returncode == 0


def _connect2(host: Host, ns: str, ip4: str) -> dict[str, object]:
    host.api.ok("POST", "/v1/netns", {"Name": ns})
    cfg = {"IPAMConfig": {"IPv4Address": ip4, "IPv6Address": REUSED6}}
    return host.api.ok("POST", "/v1/networks/reuse/connect", {"Netns": ns, "EndpointConfig": cfg})  # type: ignore[no-any-return]


def test_reused_ipv6_address_with_a_new_mac_is_announced(tmp_path: object) -> None:
    """The same IPv6 address on an endpoint with another MAC (its IPv4 address differs): the unsolicited
    neighbour advertisement updates the peer's and the host's entry at once."""
    with running_host(tmp_path) as host:  # type: ignore[arg-type]
        cfgs = [{"Subnet": "172.30.92.0/24"}, {"Subnet": "fd00:5a::/64"}]
        host.api.ok("POST", "/v1/networks", {"Name": "reuse", "EnableIPv6": True, "IPAM": {"Config": cfgs}})
        _connect(host, "p")
        a = _connect2(host, "a", "172.30.92.10")
        for path in (host.ns("p"), host.path):
            assert (
                in_ns(path, "ping", "-6", "-n", "-q", "-c", "1", "-w", "5", REUSED6, check=False).returncode == 0
            )
            assert str(a["MacAddress"]) in in_ns(path, "ip", "-6", "neigh", "show", REUSED6).stdout
        host.api.ok("DELETE", "/v1/netns/a")
        b = _connect2(host, "b", "172.30.92.11")
        assert b["MacAddress"] != a["MacAddress"]
        assert _answers6(host.ns("p"))
        assert _answers6(host.path)


def _connect_mac(host: Host, ns: str, ip: str, mac: str | None) -> dict[str, object]:
    host.api.ok("POST", "/v1/netns", {"Name": ns})
    cfg: dict[str, object] = {"IPAMConfig": {"IPv4Address": ip}}
    if mac is not None:
        cfg["MacAddress"] = mac
    return host.api.ok("POST", "/v1/networks/reuse/connect", {"Netns": ns, "EndpointConfig": cfg})  # type: ignore[no-any-return]


def test_reuse_after_an_endpoint_with_its_own_mac_is_announced(tmp_path: object) -> None:
    """A fresh IPv4 endpoint is not announced (its MAC is 02:42 + the address: cached entries are right), but
    once an endpoint with a MacAddress of its own was on the network, a later holder of its address has
    another MAC, and the gratuitous ARP must go out: the peer and the host answer at once."""
    with running_host(tmp_path) as host:  # type: ignore[arg-type]
        host.api.ok("POST", "/v1/networks", {"Name": "reuse", "IPAM": {"Config": [{"Subnet": "172.30.94.0/24"}]}})
        _connect(host, "p")
        a = _connect_mac(host, "a", "172.30.94.5", "02:aa:bb:cc:dd:05")
        assert a["MacAddress"] == "02:aa:bb:cc:dd:05"
        for path in (host.ns("p"), host.path):
            assert (
                in_ns(path, "ping", "-n", "-q", "-c", "1", "-w", "5", "172.30.94.5", check=False).returncode == 0
            )
        host.api.ok("DELETE", "/v1/netns/a")
        b = _connect_mac(host, "b", "172.30.94.5", None)
        assert b["MacAddress"] == "02:42:ac:1e:5e:05"
        for path in (host.ns("p"), host.path):
            assert _answers(path, "172.30.94.5")
            assert "02:42:ac:1e:5e:05" in in_ns(path, "ip", "neigh", "show", "172.30.94.5").stdout
        # the other way round: a derived MAC first, then the address with a MAC of its own
        _connect_mac(host, "c", "172.30.94.6", None)
        for path in (host.ns("p"), host.path):
            assert (
                in_ns(path, "ping", "-n", "-q", "-c", "1", "-w", "5", "172.30.94.6", check=False).returncode == 0
            )
        host.api.ok("DELETE", "/v1/netns/c")
        _connect_mac(host, "d", "172.30.94.6", "02:aa:bb:cc:dd:06")
        for path in (host.ns("p"), host.path):
            assert _answers(path, "172.30.94.6")


def test_endpoint_on_a_network_without_ipv6_has_ipv6_off(tmp_path: object) -> None:
    """As Docker (which disables IPv6 there), and for the kernel's per-connect cost: no IPv6 address, not even a
    link-local one, hence no DAD, MLD or router solicitation, on the peer of a network without IPv6; a
    dual-stack network's peer keeps its link-local address."""
    with running_host(tmp_path) as host:  # type: ignore[arg-type]
        host.api.ok("POST", "/v1/networks", {"Name": "reuse", "IPAM": {"Config": [{"Subnet": "172.30.95.0/24"}]}})
        cfgs = [{"Subnet": "172.30.96.0/24"}, {"Subnet": "fd00:96::/64"}]
        host.api.ok("POST", "/v1/networks", {"Name": "dual", "EnableIPv6": True, "IPAM": {"Config": cfgs}})
        _connect(host, "v4")
        host.api.ok("POST", "/v1/netns", {"Name": "v6"})
        host.api.ok("POST", "/v1/networks/dual/connect", {"Netns": "v6"})
        sysctl = "/proc/sys/net/ipv6/conf/eth0/addr_gen_mode"
        assert in_ns(host.ns("v4"), "cat", sysctl).stdout == "1\n"  # none: not even a link-local address
        assert "inet6" not in in_ns(host.ns("v4"), "ip", "addr", "show", "eth0").stdout
        assert in_ns(host.ns("v6"), "cat", sysctl).stdout == "0\n"
        assert "inet6 fe80::" in in_ns(host.ns("v6"), "ip", "addr", "show", "eth0").stdout
        assert (
            in_ns(host.ns("v4"), "ping", "-n", "-q", "-c", "1", "-w", "5", "172.30.95.1", check=False).returncode
            == 0
        )
