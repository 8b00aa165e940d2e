"""netd-ctl status / plan / check / doctor against a real daemon in a test host."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from netdtest import NETD_CTL, Host, in_ns, running_host, sh


def _net(host: Host, name: str, subnet: str, *opts: str) -> None:
    host.ctl("network", "create", "--subnet", subnet, *opts, name)


def test_status_human_and_json(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        _net(host, "s", "172.30.81.0/24")
        out = host.ctl("status").stdout
        for text in ("netd 0.1.0", "ready", "firewall:   nftables", "2 networks", "reconcile:", "health:"):
            assert text in out, out
        st = json.loads(host.ctl("status", "--format", "json").stdout)
        assert st["ready"] is True and st["networks"] == 2 and st["metrics"] == "127.0.0.1:9465"
        assert st["config"] == str(host.config_path) and st["reconcile"]["in_sync"] is True


def test_status_when_netd_is_not_running_says_how_to_start_it(tmp_path: Path) -> None:
    r = sh(NETD_CTL, "--socket", str(tmp_path / "none.sock"), "status", check=False)
    assert r.returncode == 3
    assert "systemctl start netd" in r.stderr and r.stdout == ""


def test_plan_and_check_report_a_bridge_that_cannot_be_repaired(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        _net(host, "p", "172.30.82.0/24", "-o", "com.docker.network.bridge.name=br-ops")
        assert host.ctl("check").stdout.startswith("in sync")
        assert "nothing to do" in host.ctl("plan").stdout
        # someone deletes the bridge and takes its name with a device netd does not own (netd is paused for
        # the swap, or it would repair the bridge within milliseconds of the delete)
        assert host.proc is not None
        host.proc.send_signal(signal.SIGSTOP)
        try:
            in_ns(host.path, "ip", "link", "del", "br-ops")
            in_ns(host.path, "ip", "link", "add", "br-ops", "type", "veth", "peer", "name", "br-ops-peer")
        finally:
            host.proc.send_signal(signal.SIGCONT)
        plan = host.ctl("plan").stdout
        assert "EnsureBridge" in plan and "ensure bridge br-ops (missing)" in plan, plan
        check = host.ctl("check", check=False)
        assert check.returncode == 1 and "1 difference(s)" in check.stdout and "br-ops" in check.stdout
        as_json = json.loads(host.ctl("check", "--format", "json", check=False).stdout)
        assert as_json["in_sync"] is False and as_json["differences"][0]["action"] == "EnsureBridge"
        # plan and check changed nothing: the foreign device is still there
        assert "br-ops-peer" in in_ns(host.path, "ip", "-o", "link").stdout
        # free the name: netd repairs (event or timer) and check turns green
        in_ns(host.path, "ip", "link", "del", "br-ops-peer")
        deadline = time.monotonic() + 20
        while host.ctl("check", check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert host.ctl("check", check=False).returncode == 0
        assert "bridge" in in_ns(host.path, "ip", "-d", "-o", "link", "show", "br-ops").stdout


def test_doctor_finds_overlap_foreign_drop_and_mtu_with_fixes(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        ok = host.ctl("doctor")
        assert "no problems found" in ok.stdout
        _net(host, "vpnclash", "172.30.83.0/24")
        _net(host, "jumbo", "172.30.84.0/24", "-o", "com.docker.network.driver.mtu=9000")
        # after netd made its networks: a VPN routes part of one subnet, another tool drops forwarding
        in_ns(host.path, "ip", "route", "add", "172.30.83.0/25", "via", host.outside_ip)
        in_ns(host.path, "nft", "add table ip filter")
        in_ns(
            host.path, "nft", "add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }"
        )
        r = host.ctl("doctor", check=False)
        assert r.returncode == 1
        out = r.stdout
        assert "[FAIL] subnet_overlap" in out and "172.30.83.0/25" in out
        assert "[WARN] foreign_forward_drop" in out and "ip filter FORWARD" in out and "DOCKER-USER" in out
        assert "[WARN] mtu" in out and "com.docker.network.driver.mtu=1500" in out
        assert out.count("fix:") >= 3
        report = json.loads(host.ctl("doctor", "--format", "json", check=False).stdout)
        by_check = {f["check"]: f for f in report["findings"]}
        assert report["status"] == "fail" and by_check["ip_forward"]["status"] == "ok"
