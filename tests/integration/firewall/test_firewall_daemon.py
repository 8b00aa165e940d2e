"""The firewall backends inside a real daemon: auto-selection, Docker coexistence, flush repair, switching.

Each test runs netd in a fresh "host" namespace (netdtest.py); Docker, ufw and firewalld are emulated there
with plain iptables.  Reboot replay and restart without loss (test_lifecycle.py runs them with the default
backend, nftables on this machine) run here again with the iptables backend.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from netdtest import Host, in_ns, ping, running_host

pytestmark = pytest.mark.integration

IPT = '[firewall]\nbackend = "iptables"\n'
NFT = '[firewall]\nbackend = "nftables"\n'
DOCKER_CHAINS = ("DOCKER", "DOCKER-USER", "DOCKER-FORWARD")


def ipt(host: Host, *args: str, v6: bool = False) -> str:
    return in_ns(host.path, "ip6tables" if v6 else "iptables", "-w", *args).stdout


def emulate_docker(host: Host) -> None:
    """What Docker 28 leaves in the filter table (without any container)."""
    for chain in DOCKER_CHAINS:
        ipt(host, "-N", chain)
    ipt(host, "-A", "DOCKER-USER", "-j", "RETURN")
    ipt(host, "-A", "FORWARD", "-j", "DOCKER-USER")
    ipt(host, "-A", "FORWARD", "-j", "DOCKER-FORWARD")
    ipt(host, "-A", "DOCKER-FORWARD", "-o", "docker0", "-j", "DOCKER")
    ipt(host, "-A", "DOCKER-FORWARD", "-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT")
    ipt(host, "-P", "FORWARD", "DROP")


def docker_chains(host: Host) -> dict[str, list[str]]:
    return {c: ipt(host, "-S", c).splitlines() for c in DOCKER_CHAINS}


def two_endpoints(host: Host) -> None:
    host.api.ok("POST", "/v1/networks", {"Name": "app", "IPAM": {"Config": [{"Subnet": "172.30.40.0/24"}]}})
    host.api.ok("POST", "/v1/networks", {"Name": "other", "IPAM": {"Config": [{"Subnet": "172.30.41.0/24"}]}})
    for ns, net, ip in (("a1", "app", "172.30.40.10"), ("a2", "app", "172.30.40.11"), ("o1", "other", None)):
        host.api.ok("POST", "/v1/netns", {"Name": ns})
        cfg = {"IPAMConfig": {"IPv4Address": ip}} if ip else {}
        host.api.ok("POST", f"/v1/networks/{net}/connect", {"Netns": ns, "EndpointConfig": cfg})


def traffic_ok(host: Host) -> bool:
    return (
        ping(host.ns("a1"), "172.30.40.11")  # same network (bridged, through FORWARD with br_netfilter)
        and ping(host.ns("a1"), host.outside_ip)  # NAT: the outside has no route back to 172.30.40.0/24
        and not ping(host.ns("o1"), "172.30.40.10", wait=0.3)  # isolation
    )


# ------------------------------------------------------------------------------------------------ selection

SITUATIONS = {
    "plain": ([], "nftables", "no other firewall tool"),
    "docker": ([["-N", "DOCKER"], ["-N", "DOCKER-USER"]], "iptables", "Docker"),
    "ufw": ([["-N", "ufw-before-forward"], ["-N", "ufw-user-forward"]], "iptables", "ufw"),
    "firewalld": ([["-N", "FORWARD_direct"], ["-N", "INPUT_ZONES"]], "iptables", "firewalld"),
    "forward-drop": ([["-P", "FORWARD", "DROP"]], "iptables", "FORWARD policy is DROP"),
}


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_auto_selection_shows_in_status(tmp_path: Path, situation: str) -> None:
    setup, kind, why = SITUATIONS[situation]
    with running_host(tmp_path, start=False) as host:
        for args in setup:
            ipt(host, *args)
        host.start()
        fw = host.api.ok("GET", "/v1/status")["firewall"]
        assert fw["backend"] == kind
        assert fw["reason"].startswith("auto: ") and why in fw["reason"]
        status = json.loads(host.ctl("status", "--format", "json").stdout)
        assert status["firewall"] == fw


# ------------------------------------------------------------------------------------------------ Docker


def test_beside_docker_traffic_flows_and_docker_chains_keep_their_rules(tmp_path: Path) -> None:
    with running_host(tmp_path, start=False) as host:
        emulate_docker(host)
        before = docker_chains(host)
        host.start()
        assert host.api.ok("GET", "/v1/status")["firewall"]["backend"] == "iptables"
        two_endpoints(host)
        assert traffic_ok(host)
        after = docker_chains(host)
        assert after["DOCKER"] == before["DOCKER"] and after["DOCKER-FORWARD"] == before["DOCKER-FORWARD"]
        jump = '-A DOCKER-USER -m comment --comment "netd:jump" -j NETD-FORWARD'
        assert [x for x in after["DOCKER-USER"] if x != jump] == before["DOCKER-USER"]
        assert after["DOCKER-USER"].count(jump) == 1
        assert ipt(host, "-S", "FORWARD").splitlines()[0] == "-P FORWARD DROP"


# ------------------------------------------------------------------------------------------------ flushes

FLUSHES = [
    ("nftables", "nft flush ruleset"),
    ("iptables", "iptables -F"),
    ("iptables", "iptables -t nat -F"),
    ("iptables", "nft flush ruleset"),
    ("iptables", "firewalld reload"),
]


@pytest.mark.parametrize(("backend", "flush"), FLUSHES, ids=[f"{b}:{f}" for b, f in FLUSHES])
def test_traffic_is_back_within_2s_after_a_flush(tmp_path: Path, backend: str, flush: str) -> None:
    with running_host(tmp_path, config=f'[firewall]\nbackend = "{backend}"\n', start=False) as host:
        if backend == "iptables":
            emulate_docker(host)  # FORWARD policy DROP: a flushed filter table breaks traffic, not only NAT
        host.start()
        two_endpoints(host)
        assert traffic_ok(host)
        repairs = host.api.ok("GET", "/v1/status")["reconcile"]["firewall_repairs"]
        if flush == "nft flush ruleset":
            in_ns(host.path, "nft", "flush", "ruleset")
        elif flush == "iptables -F":
            ipt(host, "-F")
        elif flush == "iptables -t nat -F":
            ipt(host, "-t", "nat", "-F")
        else:  # firewalld (iptables backend) reloads by restoring its own tables without --noflush
            subprocess.run(
                ["nsenter", f"--net={host.path}", "iptables-restore", "-w"],
                input="*filter\n:FORWARD DROP [0:0]\nCOMMIT\n*nat\nCOMMIT\n",
                text=True,
                check=True,
            )
        flushed = time.monotonic()
        deadline = flushed + 2.0
        back = False
        while not back and time.monotonic() < deadline:
            back = ping(host.ns("a1"), host.outside_ip, wait=0.2) and ping(host.ns("a1"), "172.30.40.11", wait=0.2)
        assert back, f"traffic not back within 2 s after {flush}"
        assert traffic_ok(host)
        assert host.api.ok("GET", "/v1/status")["reconcile"]["firewall_repairs"] > repairs


# ------------------------------------------------------------------------------------------------ switching


def test_switching_backends_removes_what_netd_owned_in_the_old_one(tmp_path: Path) -> None:
    with running_host(tmp_path, config=NFT) as host:
        two_endpoints(host)
        assert "table inet netd" in in_ns(host.path, "nft", "list", "tables").stdout
        host.stop()
        host.extra_config = IPT
        host.start()
        assert "table inet netd" not in in_ns(host.path, "nft", "list", "tables").stdout
        assert ":NETD-FORWARD" in in_ns(host.path, "iptables-save").stdout
        assert traffic_ok(host)
        host.stop()
        host.extra_config = NFT
        host.start()
        assert "NETD" not in in_ns(host.path, "iptables-save").stdout
        assert "NETD" not in in_ns(host.path, "ip6tables-save").stdout
        assert traffic_ok(host)


# ------------------------------------------------------------------------------------------------ lifecycle
