"""iptables backend: a published-port change is a delta (issue 14): no ``*-save``, only the changed
``NETD-PUBLISHED`` rules and the marker, for iptables-nft and iptables-legacy, read back from the kernel.

A foreign edit made before a port change makes it a full apply (which repairs it); a delta whose restore
fails leaves the previous rules in place (and the full apply that follows it, when it fails too, as well).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_address, ip_interface
from typing import Any

import pytest
from fwtopo import NetnsLoop, Topology, sh
from test_firewall_backend import NET_A, Driver, desired
from test_iptables_backend import ipt_cmd, netd_lines, save
from test_iptables_rollback import failing_ip6_restore

import netd.firewall.iptables as iptables
from netd.core.errors import FirewallError
from netd.core.model import DesiredState, Endpoint, PortMapping
from netd.firewall.iptables import IptablesBackend
from netd.firewall.iptables_render import render_chains
from netd.firewall.iptables_rule import PUBLISHED, IpFamily
from netd.firewall.rules import build_ruleset

pytestmark = pytest.mark.integration

C1, C2 = "10.90.1.2", "10.90.1.3"  # the topology's c1 and c2
REAL_BINARY = iptables.binary


def ports_state(*maps: tuple[str, int, int, str | None]) -> DesiredState:
    """Network a with the endpoints c1/c2 publishing ``(addr, host port, container port, host ip)``."""
    st = desired()
    eps: dict[str, Endpoint] = {}
    for addr, host_port, to, host_ip in maps:
        eid = f"e{addr.rsplit('.', 1)[1]}"
        ep = eps.get(eid) or Endpoint(
            id=eid,
            network=NET_A,
            netns=eid,
            ifname="eth0",
            host_ifname=f"v{eid}",
            mac="02:00:00:00:00:01",
            ipv4=ip_interface(f"{addr}/24"),
            ipv6=ip_interface(f"fd00:90:1::{addr.rsplit('.', 1)[1]}/64") if host_ip == "dual" else None,
            ports=[],
        )
        hip = ip_address(host_ip) if host_ip not in (None, "dual") else None
        ep.ports.append(PortMapping(host_port=host_port, container_port=to, host_ip=hip))
        eps[eid] = ep
    return DesiredState(networks=st.networks, endpoints=eps)


@pytest.fixture(params=["nft", "legacy"])
def ipt(request: pytest.FixtureRequest, host_loop: NetnsLoop) -> Iterator[Driver]:
    d = Driver(host_loop, IptablesBackend(request.param))
    try:
        yield d
    finally:
        d.remove_all()
        d.backend.close()  # type: ignore[attr-defined]


class Saves:
    """Counts the backend's ``*-save`` calls (a delta makes none)."""

    def __init__(self, backend: IptablesBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        real = backend._save

        async def counted(family: IpFamily) -> str:
            self.n += 1
            return await real(family)

        monkeypatch.setattr(backend, "_save", counted)


def published(topo: Topology, d: Driver, v6: bool = False) -> list[str]:
    return [
        x[len(f"-A {PUBLISHED} ") :] for x in save(topo, d, v6).splitlines() if x.startswith(f"-A {PUBLISHED} ")
    ]


def expected(st: DesiredState, family: IpFamily = "ipv4") -> list[str]:
    return sorted(dict(render_chains(build_ruleset(st), family).tables["nat"])[PUBLISHED])


def tcp_server(topo: Topology, ns: str, port: int, answer: str) -> None:
    code = (
        "import socket\n"
        f"s=socket.create_server(('0.0.0.0',{port}))\n"
        "print('ready',flush=True)\n"
        "while True:\n"
        "    c,_=s.accept(); c.sendall(" + repr(answer.encode()) + "); c.close()\n"
    )
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    topo.procs.append(p)  # killed by the topology's teardown
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"


def connect(topo: Topology, port: int) -> str:
    code = (
        "import socket\n"
        "try:\n"
        f"    s=socket.create_connection(('10.90.100.1',{port}),timeout=2); print(s.recv(10).decode())\n"
        "except OSError: print('')\n"
    )
    return sh("ip", "netns", "exec", topo.outside, sys.executable, "-c", code).stdout.strip()


def test_port_changes_are_deltas_read_back_from_the_kernel(
    topo: Topology, ipt: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw: IptablesBackend = ipt.backend  # type: ignore[assignment]
    tcp_server(topo, topo.c2, 80, "c2")
    s1 = ports_state((C1, 9001, 80, None))
    ipt.apply(s1)  # the first apply after start: full
    assert fw.deltas == 0 and published(topo, ipt) == expected(s1)
    saves = Saves(fw, monkeypatch)
    # add: one any-address port and one keyed by the host address (it must stay above the any-address rules)
    s2 = ports_state((C1, 9001, 80, None), (C2, 9002, 80, None), (C2, 9003, 80, "10.90.100.1"))
    ipt.apply(s2)
    assert (fw.deltas, saves.n) == (1, 0)
    have = published(topo, ipt)
    assert sorted(have) == expected(s2) and have[0].startswith("-d 10.90.100.1/32 ")
    assert connect(topo, 9002) == "c2" and connect(topo, 9003) == "c2"  # real DNAT'd connections
    assert ipt.in_sync(s2)  # the marker moved with the delta: no drift reported
    # remove one, change another's target
    s3 = ports_state((C2, 9001, 80, None), (C2, 9003, 80, "10.90.100.1"))
    ipt.apply(s3)
    assert fw.deltas == 2 and sorted(published(topo, ipt)) == expected(s3)
    assert connect(topo, 9001) == "c2" and connect(topo, 9002) == ""
    n = saves.n
    assert ipt.in_sync(s3) and ipt.in_sync(s3)
    assert saves.n == n  # the check was armed before the delta and stays armed: no save
    # a foreign rule in netd's chain, then a port change: a full apply (a save), which repairs it
    ipt_cmd(topo, ipt, "-A", "NETD-FORWARD", "-j", "RETURN")
    assert not ipt.in_sync(s3)
    s4 = ports_state((C2, 9001, 80, None), (C2, 9003, 80, "10.90.100.1"), (C1, 9004, 80, None))
    n = saves.n
    ipt.apply(s4)
    assert fw.deltas == 2 and saves.n > n
    assert not any(x.endswith("NETD-FORWARD -j RETURN") for x in netd_lines(save(topo, ipt)))
    assert sorted(published(topo, ipt)) == expected(s4) and ipt.in_sync(s4)
    # a foreign rule added with no check in between (the delta would apply on top of it): still a full apply
    ipt_cmd(topo, ipt, "-I", PUBLISHED, "1", "-p", "tcp", "--dport", "1", "-j", "RETURN", "-t", "nat")
    ipt.apply(s3)
    assert fw.deltas == 2 and sorted(published(topo, ipt)) == expected(s3) and ipt.in_sync(s3)


def test_failed_delta_leaves_the_previous_rules(
    topo: Topology, ipt: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    fw: IptablesBackend = ipt.backend  # type: ignore[assignment]
    before = ports_state((C1, 9001, 80, "dual"))
    after = ports_state((C1, 9001, 80, "dual"), (C1, 9002, 80, None))
    ipt.apply(before)
    v4, v6 = netd_lines(save(topo, ipt)), netd_lines(save(topo, ipt, v6=True))
    assert any("--dport 9001" in x for x in v6)
    attempts: list[IpFamily] = []
    real = fw._restore

    async def ipv4_delta_commits_then_fails(family: IpFamily, text: str) -> Any:
        if "-D NETD-STATE" in text:  # a delta: the IPv4 one goes in, then the request fails
            attempts.append(family)
            await real(family, text)
            raise FirewallError("injected")
        return await real(family, text)

    monkeypatch.setattr(fw, "_restore", ipv4_delta_commits_then_fails)
    monkeypatch.setattr(iptables, "binary", failing_ip6_restore)  # and the full apply after it fails too
    with pytest.raises(FirewallError):
        ipt.apply(after)
    assert attempts and fw.deltas == 0
    assert netd_lines(save(topo, ipt)) == v4 and netd_lines(save(topo, ipt, v6=True)) == v6
    assert ipt.in_sync(before) and not ipt.in_sync(after)
    # the delta fails (after its IPv4 half went in) but the full apply works: the new rules
    monkeypatch.setattr(iptables, "binary", REAL_BINARY)
    ipt.apply(before)
    n = len(attempts)
    ipt.apply(after)
    assert len(attempts) > n and fw.deltas == 0
    assert sorted(published(topo, ipt)) == expected(after) and ipt.in_sync(after)
