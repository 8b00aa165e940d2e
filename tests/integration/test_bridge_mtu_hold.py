"""Issue 12.4 (the brief's item 3): a bridge with a custom MTU keeps it when its last endpoint leaves.

The kernel gives a portless bridge 1500 again unless the MTU was set by the user (a change request, not the
create's IFLA_MTU): netd must set it so that it holds, and ``check`` stays in sync."""

from __future__ import annotations

import json
from pathlib import Path

from netdtest import Host, in_ns, running_host


def _mtu(host: Host, ifname: str) -> int:
    return int(json.loads(in_ns(host.path, "ip", "-j", "link", "show", ifname).stdout)[0]["mtu"])


def test_custom_mtu_holds_after_the_last_endpoint_leaves(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        host.api.ok(
            "POST",
            "/v1/networks",
            {
                "Name": "small",
                "IPAM": {"Config": [{"Subnet": "172.30.91.0/24"}]},
                "Options": {"com.docker.network.bridge.name": "br-small", "com.docker.network.driver.mtu": "1200"},
            },
        )
        assert _mtu(host, "br-small") == 1200
        for ns in ("m1", "m2"):
            host.api.ok("POST", "/v1/netns", {"Name": ns})
        for _ in range(2):  # twice: the second round starts from a bridge the first left behind
            for ns in ("m1", "m2"):
                host.api.ok("POST", "/v1/networks/small/connect", {"Netns": ns})
            assert _mtu(host, "br-small") == 1200
            for ns in ("m1", "m2"):
                host.api.ok("POST", "/v1/networks/small/disconnect", {"Netns": ns})
            # read before any reconcile: the kernel must keep it by itself
            assert _mtu(host, "br-small") == 1200
            check = host.ctl("check", check=False)
            assert check.returncode == 0, check.stdout
