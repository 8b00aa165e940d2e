"""The iptables backend on a real kernel, for both iptables flavours (nf_tables and legacy), with real packets.

Everything runs in the test topology's namespaces (fwtopo.py).  The Docker setup is emulated with plain
iptables inside the test host namespace: chains DOCKER, DOCKER-USER, DOCKER-FORWARD and a FORWARD policy of
DROP, the way Docker 28 leaves them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fwtopo import NetnsLoop, Topology, dual_stack_state, sh
from test_firewall_backend import Driver, desired

from netd.core.model import DesiredState
from netd.firewall.iptables import IptablesBackend, binary
from netd.firewall.nftables import NftablesBackend
from netd.firewall.rules import build_ruleset
from netd.firewall.select import cleanup_other, decide, probe

pytestmark = pytest.mark.integration


@pytest.fixture(params=["nft", "legacy"])
def ipt(request: pytest.FixtureRequest, host_loop: NetnsLoop) -> Iterator[Driver]:
    yield Driver(host_loop, IptablesBackend(request.param))


def flavour(d: Driver) -> str:
    return str(d.backend.flavour)  # type: ignore[attr-defined]


def ipt_cmd(topo: Topology, d: Driver, *args: str, v6: bool = False, check: bool = True) -> str:
    prog = f"{'ip6tables' if v6 else 'iptables'}-{flavour(d)}"
    return sh("ip", "netns", "exec", topo.host, prog, "-w", *args, check=check).stdout


def save(topo: Topology, d: Driver, v6: bool = False) -> str:
    fam = "ipv6" if v6 else "ipv4"
    out = sh("ip", "netns", "exec", topo.host, binary(d.backend.flavour, fam, "save")).stdout  # type: ignore[attr-defined]
    # no comments (dates) and no policy counters (legacy counts packets in the built-in chains' policies)
    return "\n".join(re.sub(r" \[\d+:\d+\]$", "", x) for x in out.splitlines() if not x.startswith("#"))


def netd_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "NETD" in line]


def emulate_docker(topo: Topology, d: Driver) -> None:
    for chain in ("DOCKER", "DOCKER-USER", "DOCKER-FORWARD"):
        ipt_cmd(topo, d, "-N", chain)
    ipt_cmd(topo, d, "-A", "DOCKER-USER", "-j", "RETURN")
    ipt_cmd(topo, d, "-A", "FORWARD", "-j", "DOCKER-USER")
    ipt_cmd(topo, d, "-A", "FORWARD", "-j", "DOCKER-FORWARD")
    ipt_cmd(topo, d, "-A", "DOCKER-FORWARD", "-o", "docker0", "-j", "DOCKER")
    ipt_cmd(topo, d, "-A", "DOCKER-FORWARD", "-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT")
    ipt_cmd(topo, d, "-P", "FORWARD", "DROP")


# ------------------------------------------------------------------------------------------------ basics


def test_rules_land_in_the_test_namespace_with_comments(topo: Topology, ipt: Driver) -> None:
    ipt.apply(desired(a={"icc": False}))
    text = save(topo, ipt)
    assert ":NETD-FORWARD" in text and ":NETD-ISOLATION" in text and ":NETD-POSTROUTING" in text
    for line in netd_lines(text):
        if line.startswith("-A"):
            assert '--comment "netd:' in line, line
    forward = [x for x in text.splitlines() if x.startswith("-A FORWARD")]
    assert forward == ['-A FORWARD -m comment --comment "netd:jump" -j NETD-FORWARD']
    host_ino = f"net:[{__import__('os').stat(f'/run/netns/{topo.host}').st_ino}]"
    assert ipt.backend.describe()["netns"] == host_ino
    assert not topo.ping(topo.c1, "10.90.2.2") and topo.ping(topo.c1, "10.90.100.2")


def test_apply_is_idempotent_and_in_sync(topo: Topology, ipt: Driver) -> None:
    st = desired(b={"internal": True})
    assert not ipt.in_sync(st)
    ipt.apply(st)
    first = save(topo, ipt), save(topo, ipt, v6=True)
    ipt.apply(st)
    assert (save(topo, ipt), save(topo, ipt, v6=True)) == first
    assert ipt.in_sync(st)
    assert not ipt.in_sync(desired())


def _flushes(d: Driver) -> list[str]:
    kinds = ["iptables -F", "iptables -t nat -F", "ip6tables -F", "restore without netd", "chain deleted"]
    return [*kinds, "nft flush ruleset"] if flavour(d) == "nft" else kinds


def test_in_sync_detects_each_kind_of_flush_and_apply_repairs(topo: Topology, ipt: Driver) -> None:
    st = desired()
    ipt.apply(st)
    topo.udp_echo_server()
    for kind in _flushes(ipt):
        if kind == "iptables -F":
            ipt_cmd(topo, ipt, "-F")
        elif kind == "iptables -t nat -F":
            ipt_cmd(topo, ipt, "-t", "nat", "-F")
        elif kind == "ip6tables -F":
            ipt_cmd(topo, ipt, "-F", v6=True)
        elif kind == "restore without netd":  # what firewalld's reload or `systemctl restart iptables` does
            prog = binary(ipt.backend.flavour, "ipv4", "restore")  # type: ignore[attr-defined]
            sh(
                "ip",
                "netns",
                "exec",
                topo.host,
                "sh",
                "-c",
                f"printf '*filter\\nCOMMIT\\n*nat\\nCOMMIT\\n' | {prog}",
            )
        elif kind == "chain deleted":
            ipt_cmd(topo, ipt, "-F", "NETD-ISOLATION")
        else:
            topo.nft("flush", "ruleset")
        assert not ipt.in_sync(st), kind
        ipt.apply(st)
        assert ipt.in_sync(st), kind
        assert not topo.ping(topo.c1, "10.90.2.2"), kind  # isolation is back
        assert topo.source_seen_by_outside(topo.c1) == "10.90.100.1", kind  # and NAT


def test_networks_removed_and_empty_state(topo: Topology, ipt: Driver) -> None:
    ipt.apply(desired())
    one = DesiredState(networks={k: v for k, v in desired().networks.items() if k == "a"})
    ipt.apply(one)
    assert "NETD-TO-bbbb00000000" not in save(topo, ipt)
    assert ipt.in_sync(one)
    ipt.apply(DesiredState())
    assert netd_lines(save(topo, ipt)) == [] and netd_lines(save(topo, ipt, v6=True)) == []
    assert ipt.in_sync(DesiredState())
    assert topo.ping(topo.c1, "10.90.2.2")  # no rules: plain routing again


def test_foreign_rules_untouched_and_remove_all(topo: Topology, ipt: Driver) -> None:
    ipt_cmd(topo, ipt, "-N", "FOREIGN")
    ipt_cmd(topo, ipt, "-A", "FOREIGN", "-s", "192.0.2.1", "-m", "comment", "--comment", "mine", "-j", "ACCEPT")
    ipt_cmd(topo, ipt, "-A", "FORWARD", "-j", "FOREIGN")
    ipt_cmd(topo, ipt, "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "MASQUERADE")
    before = save(topo, ipt), save(topo, ipt, v6=True)
    ipt.apply(desired(a={"icc": False}))
    now = save(topo, ipt)
    assert [x for x in now.splitlines() if "NETD" not in x] == before[0].splitlines()
    ipt.remove_all()
    assert save(topo, ipt) == before[0]
    assert netd_lines(save(topo, ipt, v6=True)) == []  # ip6 filter/nat stay, empty, as iptables made them
    ipt.remove_all()  # nothing left to remove: not an error


def test_dual_stack_rules_load(topo: Topology, ipt: Driver) -> None:
    st = dual_stack_state()
    ipt.apply(st)
    assert ipt.in_sync(st)
    assert '-A NETD-POSTROUTING -s fd00:91::/64 ! -o br-0 -m comment --comment "netd:n0" -j MASQUERADE' in save(
        topo, ipt, v6=True
    )


def test_icc_off_turns_bridge_netfilter_on(topo: Topology, ipt: Driver) -> None:
    topo.set_br_netfilter(False)
    ipt.apply(desired())
    sysctl = sh("ip", "netns", "exec", topo.host, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables").stdout
    assert sysctl.strip() == "0"  # not needed: left alone
    ipt.apply(desired(a={"icc": False}))
    for key in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
        assert sh("ip", "netns", "exec", topo.host, "sysctl", "-n", key).stdout.strip() == "1"
    assert not topo.ping(topo.c1, "10.90.1.3")


# ------------------------------------------------------------------------------------------------ Docker


def test_beside_docker(topo: Topology, ipt: Driver) -> None:
    emulate_docker(topo, ipt)
    assert not topo.ping(topo.c1, "10.90.100.2")  # Docker's FORWARD policy DROP blocks everyone
    docker_forward = ipt_cmd(topo, ipt, "-S", "DOCKER-FORWARD")
    docker_user = ipt_cmd(topo, ipt, "-S", "DOCKER-USER")
    docker = ipt_cmd(topo, ipt, "-S", "DOCKER")
    ipt.apply(desired())
    assert topo.ping(topo.c1, "10.90.100.2")  # netd's accepts win over the DROP policy
    assert topo.ping(topo.c1, "10.90.1.3")  # same bridge (br_netfilter: bridged traffic crosses FORWARD)
    assert not topo.ping(topo.c1, "10.90.2.2")  # isolation still holds
    assert ipt_cmd(topo, ipt, "-S", "DOCKER-FORWARD") == docker_forward
    assert ipt_cmd(topo, ipt, "-S", "DOCKER") == docker
    user_now = ipt_cmd(topo, ipt, "-S", "DOCKER-USER").splitlines()
    assert user_now[1] == '-A DOCKER-USER -m comment --comment "netd:jump" -j NETD-FORWARD'
    assert [x for x in user_now if "NETD" not in x] == docker_user.splitlines()
    assert ipt_cmd(topo, ipt, "-S", "FORWARD").splitlines()[0] == "-P FORWARD DROP"  # never changed
    ipt.remove_all()
    assert ipt_cmd(topo, ipt, "-S", "DOCKER-USER") == docker_user
    assert ipt_cmd(topo, ipt, "-S", "DOCKER-FORWARD") == docker_forward
    assert not topo.ping(topo.c1, "10.90.100.2")


def test_docker_started_after_netd_gets_the_jump(topo: Topology, ipt: Driver) -> None:
    st = desired()
    ipt.apply(st)
    emulate_docker(topo, ipt)
    assert not ipt.in_sync(st)  # DOCKER-USER appeared without netd's jump
    ipt.apply(st)
    assert ipt.in_sync(st)
    assert "NETD-FORWARD" in ipt_cmd(topo, ipt, "-S", "DOCKER-USER")
    assert topo.ping(topo.c1, "10.90.100.2")


# ------------------------------------------------------------------------------------------------ selection


@pytest.mark.parametrize(
    ("setup", "kind", "why"),
    [
        ([], "nftables", "no other firewall tool"),
        ([["-N", "DOCKER-USER"]], "iptables", "Docker"),
        ([["-N", "ufw-before-forward"]], "iptables", "ufw"),
        ([["-N", "FORWARD_direct"], ["-N", "INPUT_ZONES"]], "iptables", "firewalld"),
        ([["-P", "FORWARD", "DROP"]], "iptables", "FORWARD policy is DROP"),
    ],
    ids=["plain", "docker", "ufw", "firewalld", "forward-drop"],
)
def test_auto_probe_in_the_namespace(
    topo: Topology, host_loop: NetnsLoop, setup: list[list[str]], kind: str, why: str
) -> None:
    for args in setup:
        sh("ip", "netns", "exec", topo.host, "iptables", "-w", *args)
    got, reason = decide(host_loop.call(probe))
    assert got == kind and why in reason


def test_switching_backend_removes_the_old_ones_rules(topo: Topology, host_loop: NetnsLoop) -> None:
    rs = build_ruleset(desired())
    nft = NftablesBackend()
    ipt = IptablesBackend("nft")
    try:
        host_loop.run(nft.apply(rs))
        assert host_loop.run(cleanup_other(ipt)) == ["nftables"]
        assert "netd" not in topo.nft("list", "tables")
        host_loop.run(ipt.apply(rs))
        assert host_loop.run(cleanup_other(nft)) == ["iptables-nft"]
        assert "NETD" not in topo.nft("list", "ruleset")
        assert host_loop.run(cleanup_other(nft)) == []
    finally:
        nft.close()
