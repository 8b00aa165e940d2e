"""Reboot replay, restart without disruption, foreign objects, a daemon killed mid-operation."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from netdtest import NETD, Host, in_ns, ping, reach, running_host

DEFAULT_BRIDGE = '[default_bridge]\nbip = "10.123.0.1/24"\nmtu = 1400\n'


def _setup(host: Host) -> None:
    host.api.ok("POST", "/v1/networks", {"Name": "app", "IPAM": {"Config": [{"Subnet": "172.30.20.0/24"}]}})
    host.api.ok("POST", "/v1/networks", {"Name": "other", "IPAM": {"Config": [{"Subnet": "172.30.21.0/24"}]}})
    for ns, net, ip in (("web", "app", "172.30.20.10"), ("db", "app", "172.30.20.11"), ("x", "other", None)):
        host.api.ok("POST", "/v1/netns", {"Name": ns})
        cfg = {"IPAMConfig": {"IPv4Address": ip}} if ip else {}
        host.api.ok("POST", f"/v1/networks/{net}/connect", {"Netns": ns, "EndpointConfig": cfg})
    host.api.ok("POST", "/v1/networks/bridge/connect", {"Netns": "web"})


def _check(host: Host) -> None:
    assert reach(host.ns("web"), "172.30.20.11")
    assert reach(host.ns("db"), "172.30.20.10")
    assert not ping(host.ns("x"), "172.30.20.10")
    assert reach(host.ns("db"), host.outside_ip)  # NAT through the uplink
    br = json.loads(in_ns(host.path, "ip", "-j", "-d", "addr", "show", "netd0").stdout)[0]
    assert br["mtu"] == 1400
    assert [(a["local"], a["prefixlen"]) for a in br["addr_info"] if a["family"] == "inet"] == [("10.123.0.1", 24)]
    web = json.loads(in_ns(host.ns("web"), "ip", "-j", "addr", "show", "eth1").stdout)[0]
    assert web["addr_info"][0]["local"].startswith("10.123.0.")
    assert in_ns(host.path, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"


BACKENDS = ["nftables", "iptables"]


def _config(backend: str) -> str:
    return DEFAULT_BRIDGE + f'[firewall]\nbackend = "{backend}"\n'


@pytest.mark.parametrize("backend", BACKENDS)
def test_reboot_replays_everything(tmp_path: Path, backend: str) -> None:
    with running_host(tmp_path, config=_config(backend)) as host:
        _setup(host)
        _check(host)
        state_before = host.stored_state()
        host.reboot()
        assert in_ns(host.path, "ip", "link", "show", "netd0", check=False).returncode != 0  # really gone
        assert not Path(host.ns("web")).exists()
        host.start()
        _check(host)
        assert host.stored_state() == state_before
        status = host.api.ok("GET", "/v1/status")
        assert status["reconcile"]["in_sync"] is True


@pytest.mark.parametrize("backend", BACKENDS)
def test_restart_loses_no_packet(tmp_path: Path, backend: str) -> None:
    with running_host(tmp_path, config=_config(backend)) as host:
        _setup(host)
        before = host.kernel_snapshot()
        pinger = subprocess.Popen(
            [
                "nsenter",
                f"--net={host.ns('web')}",
                "ping",
                "-n",
                "-i",
                "0.05",
                "-c",
                "80",
                "-W",
                "1",
                "172.30.20.11",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(0.5)
            assert host.stop(signal.SIGTERM) == 0
            assert host.kernel_snapshot() == before  # SIGTERM tears nothing down
            host.start()
            out, _ = pinger.communicate(timeout=30)
        finally:
            pinger.kill()
            pinger.wait()
        assert " 0% packet loss" in out, out
        assert "80 received" in out
        assert host.api.ok("POST", "/v1/reconcile")["changes"] == 0
        assert host.kernel_snapshot() == before


def test_foreign_objects_are_untouched(tmp_path: Path) -> None:
    with running_host(tmp_path, start=False) as host:
        in_ns(host.path, "ip", "link", "add", "foreignbr", "type", "bridge")
        in_ns(host.path, "ip", "link", "add", "fv0", "type", "veth", "peer", "name", "fv1")
        in_ns(host.path, "ip", "link", "set", "fv0", "master", "foreignbr")
        in_ns(host.path, "ip", "addr", "add", "192.0.2.1/24", "dev", "foreignbr")
        in_ns(host.path, "nft", "add table inet foreign")
        in_ns(
            host.path, "nft", "add chain inet foreign fw { type filter hook forward priority 0; policy accept; }"
        )
        in_ns(host.path, "nft", 'add rule inet foreign fw iifname "foreignbr" counter accept')

        def foreign() -> str:
            links = in_ns(host.path, "ip", "-d", "link", "show", "foreignbr").stdout
            links += in_ns(host.path, "ip", "-d", "link", "show", "fv0").stdout
            addrs = in_ns(host.path, "ip", "addr", "show", "foreignbr").stdout
            return links + addrs + in_ns(host.path, "nft", "list", "table", "inet", "foreign").stdout

        snap = foreign()
        host.start()
        _setup(host)
        assert foreign() == snap
        host.api.ok("POST", "/v1/reconcile")
        assert foreign() == snap
        host.stop()
        assert foreign() == snap
        host.start()  # a restart with a stray owned object: only netd's own objects are swept
        host.api.ok("DELETE", "/v1/netns/x")
        host.api.ok("POST", "/v1/reconcile")
        assert foreign() == snap


def test_killed_mid_operation_leaks_nothing(tmp_path: Path) -> None:
    """kill -9 in the middle of a burst of connects: after restart every endpoint in the state is complete and
    every owned veth belongs to an endpoint in the state (no leaked address, no orphan interface)."""
    with running_host(tmp_path) as host:
        host.api.ok("POST", "/v1/networks", {"Name": "burst", "IPAM": {"Config": [{"Subnet": "172.30.22.0/24"}]}})
        for i in range(12):
            host.api.ok("POST", "/v1/netns", {"Name": f"b{i}"})
        sock = str(host.run_dir / "netd.sock")
        script = (
            "import json,socket,sys\n"
            "for i in range(12):\n"
            "    s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "    b=json.dumps({'Netns': f'b{i}'}).encode()\n"
            "    h=b'POST /v1/networks/burst/connect HTTP/1.0\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(b)\n"
            "    s.sendall(h + b)\n"
            "    s.recv(65536); s.close()\n"
        )
        client = subprocess.Popen(["python3", "-c", script, sock], stderr=subprocess.DEVNULL)
        time.sleep(0.15)
        host.stop(signal.SIGKILL)
        client.kill()
        client.wait()
        host.start()
        state = host.stored_state()
        eps = [ep for ep in state["endpoints"].values()]
        ips = [ep["ipv4"] for ep in eps]
        assert len(ips) == len(set(ips))
        owned = json.loads(in_ns(host.path, "ip", "-j", "link", "show", "type", "veth").stdout)
        veths = {link["ifname"] for link in owned if link.get("ifalias", "").startswith("netd:")}
        assert veths == {ep["host_ifname"] for ep in eps}
        for ep in eps:
            assert reach(host.ns(ep["netns"]), "172.30.22.1")
        # the remaining namespaces still connect, and addresses continue where the state says
        done = {ep["netns"] for ep in eps}
        for i in range(12):
            if f"b{i}" not in done:
                host.api.ok("POST", "/v1/networks/burst/connect", {"Netns": f"b{i}"})
        final = host.api.ok("GET", "/v1/networks/burst")["Containers"]
        assert len({c["IPv4Address"] for c in final.values()}) == 12


def test_purge_firewall_removes_netds_rules_and_jumps_only(tmp_path: Path) -> None:
    """`netd --purge-firewall` (uninstall): netd's nft tables, NETD-* chains and jumps go; the rest stays."""
    for backend in ("nftables", "iptables"):
        with running_host(tmp_path / backend, config=f'[firewall]\nbackend = "{backend}"\n') as host:
            in_ns(host.path, "iptables", "-N", "DOCKER-USER")
            in_ns(host.path, "iptables", "-A", "DOCKER-USER", "-j", "RETURN")
            _setup(host)
            assert reach(host.ns("web"), "172.30.20.11")
            host.stop()
            # the services' LB and the encrypted overlays' tables (made here by hand: no cluster in this test)
            in_ns(host.path, "nft", "add", "table", "ip", "netd-lb")
            in_ns(host.path, "nft", "add", "table", "inet", "netd_esp")
            # and the routing mesh's NETDLB chains with their jump (the iptables LB in the node's namespace)
            in_ns(host.path, "iptables", "-t", "nat", "-N", "NETDLB-PRE")
            in_ns(host.path, "iptables", "-t", "nat", "-I", "PREROUTING", "1", "-j", "NETDLB-PRE")
            r = in_ns(host.path, NETD, "--purge-firewall")
            assert "removed" in r.stdout
            assert "netd" not in in_ns(host.path, "nft", "list", "tables").stdout
            saved = in_ns(host.path, "iptables-save").stdout
            assert "NETD" not in saved and "netd:" not in saved
            assert "-A DOCKER-USER -j RETURN" in saved  # a foreign chain keeps its rule


def test_default_bridge_default_gateway(tmp_path: Path) -> None:
    """daemon.json's default-gateway: endpoints of the default bridge route via it, not the bridge address."""
    config = '[default_bridge]\nbip = "10.124.0.1/24"\ndefault-gateway = "10.124.0.254"\n'
    with running_host(tmp_path, config=config) as host:
        host.api.ok("POST", "/v1/netns", {"Name": "d"})
        ep = host.api.ok("POST", "/v1/networks/bridge/connect", {"Netns": "d"})
        assert ep["Gateway"] == "10.124.0.254"
        routes = json.loads(in_ns(host.ns("d"), "ip", "-j", "route", "show", "default").stdout)
        assert [r["gateway"] for r in routes] == ["10.124.0.254"]
        assert reach(host.ns("d"), "10.124.0.1")  # the bridge itself is still on-link
