"""netd puts back what it changed on things that are not its own (issue 11.10 and 11.11).

- the host-wide IPv6 sysctls (``all.forwarding`` 0 -> 1, the uplink's ``accept_ra`` 1 -> 2) when the last IPv6
  network goes, and on ``netd --purge-firewall``; a value someone else changed since is left alone;
- the gateway addresses netd added to a foreign bridge a network adopted, when that network goes; the bridge's
  own addresses stay.
All inside a test host namespace (``running_host``); the kernel is read back with ip and sysctl.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from netdtest import NETD, Host, in_ns, running_host, sh

FWD = "net.ipv6.conf.all.forwarding"
RA = "net.ipv6.conf.uplink.accept_ra"


def sysctl(host: Host, key: str) -> str:
    return in_ns(host.path, "sysctl", "-n", key).stdout.strip()


def net6(host: Host, name: str, subnet: str) -> None:
    body = {"Name": name, "EnableIPv6": True, "IPAM": {"Config": [{"Subnet": subnet}]}}
    host.api.ok("POST", "/v1/networks", body)


def test_ipv6_sysctls_come_back_after_the_last_ipv6_network(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        assert (sysctl(host, FWD), sysctl(host, RA)) == ("0", "1")  # a fresh namespace's own values
        net6(host, "v6a", "fd00:71::/64")
        net6(host, "v6b", "fd00:72::/64")
        assert (sysctl(host, FWD), sysctl(host, RA)) == ("1", "2")
        host.api.ok("DELETE", "/v1/networks/v6a")
        assert (sysctl(host, FWD), sysctl(host, RA)) == ("1", "2")  # v6b still needs them
        host.stop()
        host.start()  # the record survives a restart
        host.api.ok("DELETE", "/v1/networks/v6b")
        assert (sysctl(host, FWD), sysctl(host, RA)) == ("0", "1")
        assert host.ctl("check").returncode == 0
        net6(host, "v6c", "fd00:73::/64")  # and it works again the next time
        assert (sysctl(host, FWD), sysctl(host, RA)) == ("1", "2")
        in_ns(host.path, "sysctl", "-qw", f"{RA}=0")  # the operator's own choice since: not netd's to undo
        host.api.ok("DELETE", "/v1/networks/v6c")
        assert (sysctl(host, FWD), sysctl(host, RA)) == ("0", "0")


def test_purge_puts_the_ipv6_sysctls_back(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        net6(host, "v6", "fd00:74::/64")
        assert (sysctl(host, FWD), sysctl(host, RA)) == ("1", "2")
        host.stop()
        cmd = ["nsenter", f"--net={host.path}", NETD, "--purge-firewall", "--config", str(host.config_path)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        assert f"{FWD}=0" in out, out
        assert (sysctl(host, FWD), sysctl(host, RA)) == ("0", "1")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        assert "restored host sysctls: nothing" in out  # once only


def addrs(host: Host, ifname: str) -> set[str]:
    data: list[dict[str, Any]] = json.loads(in_ns(host.path, "ip", "-j", "addr", "show", "dev", ifname).stdout)
    return {f"{a['local']}/{a['prefixlen']}" for a in data[0]["addr_info"] if a.get("scope") == "global"}


def adopt(host: Host, name: str, subnet: str) -> None:
    body = {
        "Name": name,
        "IPAM": {"Config": [{"Subnet": subnet}]},
        "Options": {"com.docker.network.bridge.name": "brx"},
    }
    host.api.ok("POST", "/v1/networks", body)


def test_adopted_bridge_loses_only_the_addresses_netd_added(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        sh("ip", "-n", host.name, "link", "add", "brx", "type", "bridge")
        sh("ip", "-n", host.name, "addr", "add", "192.168.77.1/24", "dev", "brx")
        sh("ip", "-n", host.name, "addr", "add", "10.78.0.1/24", "dev", "brx")  # the admin's own gateway
        sh("ip", "-n", host.name, "link", "set", "brx", "up")
        adopt(host, "adopted", "10.77.0.0/24")
        assert addrs(host, "brx") == {"192.168.77.1/24", "10.78.0.1/24", "10.77.0.1/24"}
        host.stop()
        host.start()  # the record of what netd added survives a restart
        host.api.ok("DELETE", "/v1/networks/adopted")
        assert addrs(host, "brx") == {"192.168.77.1/24", "10.78.0.1/24"}
        # a network whose gateway the bridge already had: that address is not netd's, it stays
        adopt(host, "again", "10.78.0.0/24")
        host.api.ok("DELETE", "/v1/networks/again")
        assert addrs(host, "brx") == {"192.168.77.1/24", "10.78.0.1/24"}
        assert in_ns(host.path, "ip", "link", "show", "brx").returncode == 0  # the bridge itself stays
