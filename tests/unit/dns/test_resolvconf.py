"""resolv.conf parsing, rendering, and the writer's ownership rules (files in a temp dir)."""

from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path

from netd.core.model import DesiredState, Endpoint, IpamConfig, Netns, Network
from netd.dns.resolvconf import MARKER, HostResolv, ResolvConfWriter, build_files, parse, read_host

HOST = """\
# from the machine
nameserver 127.0.0.53
nameserver 192.0.2.1 ; comment
nameserver fe80::1%eth0
nameserver not-an-ip
domain old.example
search corp.example lab.example
options edns0 timeout:2
"""


def _net(name: str, subnet: str, **kw: object) -> Network:
    sub = ip_network(subnet)
    return Network(
        id=f"id-{name}",
        name=name,
        bridge=f"br-{name}",
        ipam=[IpamConfig(subnet=sub, gateway=next(sub.hosts()))],
        **kw,
    )


def _ep(net: Network, ns: str, addr: str) -> Endpoint:
    return Endpoint(
        id=f"ep-{net.name}-{ns}",
        network=net.id,
        netns=ns,
        ifname="eth0",
        host_ifname=f"v-{ns}",
        mac="02:00:00:00:00:01",
        ipv4=ip_interface(addr),
    )


def _state(*eps: Endpoint, nets: list[Network]) -> DesiredState:
    return DesiredState(
        networks={n.name: n for n in nets},
        netns={e.netns: Netns(name=e.netns) for e in eps if e.netns},
        endpoints={e.id: e for e in eps},
    )


def test_parse() -> None:
    h = parse(HOST)
    assert [str(a) for a in h.nameservers] == ["127.0.0.53", "192.0.2.1", "fe80::1"]
    assert h.search == ["corp.example", "lab.example"]
    assert h.options == ["edns0", "timeout:2"]
    assert read_host(Path("/nonexistent/resolv.conf")) == HostResolv()


def test_first_user_defined_network_wins() -> None:
    default = _net("bridge", "172.17.0.0/16", is_default=True)
    a = _net("a", "172.31.1.0/24")
    b = _net("b", "172.31.2.0/24")
    st = _state(
        _ep(default, "web", "172.17.0.2/16"),
        _ep(b, "web", "172.31.2.2/24"),
        _ep(a, "web", "172.31.1.2/24"),
        _ep(default, "old", "172.17.0.3/16"),
        nets=[default, a, b],
    )
    files = build_files(st, parse(HOST))
    assert set(files) == {"web"}  # "old" is only on the default bridge: no resolver, no file
    lines = files["web"].splitlines()
    assert lines[0].startswith(MARKER)
    assert lines[1:] == [
        "nameserver 172.31.2.1",
        "search corp.example lab.example",
        "options edns0 timeout:2 ndots:0",
    ]
    assert "ndots:0" not in build_files(st, HostResolv(options=["ndots:2"]))["web"]


def test_writer_owns_only_its_files(tmp_path: Path) -> None:
    a = _net("a", "172.31.1.0/24")
    w = ResolvConfWriter(tmp_path / "netns", HostResolv())
    w.sync(_state(_ep(a, "web", "172.31.1.2/24"), _ep(a, "api", "172.31.1.3/24"), nets=[a]))
    web = tmp_path / "netns" / "web" / "resolv.conf"
    assert "nameserver 172.31.1.1" in web.read_text()
    (tmp_path / "netns" / "web" / "hosts").write_text("192.0.2.9 x\n")  # the user's, beside ours
    (tmp_path / "netns" / "mine").mkdir()
    (tmp_path / "netns" / "mine" / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    (tmp_path / "netns" / "api" / "resolv.conf").write_text("nameserver 192.0.2.2\n")  # the user replaced ours
    w.sync(_state(nets=[a]))
    assert not web.exists() and (tmp_path / "netns" / "web" / "hosts").exists()
    assert (tmp_path / "netns" / "mine" / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
    assert (tmp_path / "netns" / "api" / "resolv.conf").read_text() == "nameserver 192.0.2.2\n"
    w.sync(_state(_ep(a, "api", "172.31.1.3/24"), nets=[a]))
    assert (tmp_path / "netns" / "api" / "resolv.conf").read_text() == "nameserver 192.0.2.2\n"  # not clobbered
    w.sync(_state(_ep(a, "solo", "172.31.1.4/24"), nets=[a]))
    w.sync(_state(nets=[a]))
    assert not (tmp_path / "netns" / "solo").exists()  # the directory goes with netd's only file


def test_a_scoped_sync_touches_only_the_named_namespaces(tmp_path: Path) -> None:
    app = _net("app", "10.20.0.0/24")
    a, b = _ep(app, "a", "10.20.0.2/24"), _ep(app, "b", "10.20.0.3/24")
    writer = ResolvConfWriter(tmp_path, HostResolv())
    writer.sync(_state(a, nets=[app]))  # the first pass is a full one
    assert (tmp_path / "a" / "resolv.conf").read_text().startswith(MARKER)
    (tmp_path / "a" / "resolv.conf").write_text(MARKER + "\n# edited\n")  # outside the scope: left as it is
    writer.sync(_state(a, b, nets=[app]), frozenset({"b"}))
    assert "nameserver 10.20.0.1" in (tmp_path / "b" / "resolv.conf").read_text()
    assert (tmp_path / "a" / "resolv.conf").read_text().endswith("# edited\n")
    writer.sync(_state(a, nets=[app]), frozenset({"b"}))  # b disconnected
    assert not (tmp_path / "b" / "resolv.conf").exists()
    assert build_files(_state(a, nets=[app]), HostResolv()).keys() == {"a"}


def test_default_bridge_dns_is_written_for_its_namespaces(tmp_path: Path) -> None:
    """Issue 12 item 5: ``[default_bridge] dns`` was accepted and ignored (no file for default-bridge netns)."""
    default = _net("bridge", "172.17.0.0/16", is_default=True)
    a = _net("a", "172.31.1.0/24")
    st = _state(_ep(default, "old", "172.17.0.3/16"), _ep(a, "web", "172.31.1.2/24"), nets=[default, a])
    dns = [ip_address("10.20.1.2"), ip_address("2001:db8::53")]
    files = build_files(st, parse(HOST), dns)
    assert files["old"].splitlines()[1:3] == ["nameserver 10.20.1.2", "nameserver 2001:db8::53"]
    assert "ndots:0" not in files["old"]
    assert "nameserver 172.31.1.1" in files["web"]
    w = ResolvConfWriter(tmp_path, HostResolv(), dns)
    w.sync(st)
    assert "nameserver 10.20.1.2" in (tmp_path / "old" / "resolv.conf").read_text()
    w.default_dns = []
    w.sync(st)
    assert not (tmp_path / "old").exists()


def test_many_removed_in_the_worker_and_a_namespace_made_again_keeps_its_new_file(tmp_path: Path) -> None:
    net = _net("a", "10.1.0.0/24")
    eps = [_ep(net, f"n{i}", f"10.1.0.{10 + i}/24") for i in range(20)]
    w = ResolvConfWriter(tmp_path, HostResolv())
    w.sync(_state(*eps, nets=[net]))
    assert len(list(tmp_path.iterdir())) == 20
    # one change forgets all 20 (netns rm n0 ... n19): their files go in the worker thread
    w.sync(_state(nets=[net]), only=[f"n{i}" for i in range(20)])
    # n3 is made and connected again at once: its new file must survive the queued removal
    w.sync(_state(eps[3], nets=[net]), only=["n3"])
    w.drain()
    assert sorted(d.name for d in tmp_path.iterdir()) == ["n3"]
    assert (tmp_path / "n3" / "resolv.conf").read_text().startswith(MARKER)
    # a few at a time are removed before sync returns
    w.sync(_state(nets=[net]), only=["n3"])
    assert list(tmp_path.iterdir()) == []
    w.close()
