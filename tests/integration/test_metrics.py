"""/metrics on a real daemon: promtool finds nothing to complain about, counters match what the kernel says."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from netdtest import Host, in_ns, ping, running_host

SCRAPE = (
    "import sys, urllib.request; "
    "r = urllib.request.urlopen('http://127.0.0.1:9465/metrics', timeout=10); "
    "sys.stdout.write(r.headers['Content-Type'] + '\\n' + r.read().decode())"
)


def scrape(host: Host) -> tuple[str, str]:
    """(content type, body) of a scrape from inside the host namespace (where netd listens on 127.0.0.1)."""
    out = in_ns(host.path, sys.executable, "-c", SCRAPE).stdout
    ctype, _, body = out.partition("\n")
    return ctype, body


def sample(body: str, name: str, **labels: str) -> float:
    for line in body.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def _setup(host: Host) -> tuple[dict[str, object], dict[str, object]]:
    host.api.ok("POST", "/v1/networks", {"Name": "m", "IPAM": {"Config": [{"Subnet": "172.30.71.0/24"}]}})
    eps = []
    for ns in ("m1", "m2"):
        host.api.ok("POST", "/v1/netns", {"Name": ns})
        eps.append(host.api.ok("POST", "/v1/networks/m/connect", {"Netns": ns}))
    return eps[0], eps[1]


def test_promtool_accepts_a_real_scrape(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        _setup(host)
        host.api.ok("GET", "/v1/networks")  # some API traffic for the request metrics
        host.api.request("GET", "/v1/networks/nope")
        ctype, body = scrape(host)
        assert ctype.startswith("text/plain; version=0.0.4")
        r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert sample(body, "netd_network_endpoints", network="m") == 2
        assert sample(body, "netd_network_addresses_in_use", network="m", subnet="172.30.71.0/24") == 3
        assert sample(body, "netd_network_addresses_size", network="m", subnet="172.30.71.0/24") == 254
        assert sample(body, "netd_ready") == 1
        assert sample(body, "netd_reconciles_total", outcome="ok") >= 1
        assert sample(body, "netd_reconcile_duration_seconds_count") >= 1
        assert sample(body, "netd_firewall_info", backend="nftables") == 1
        assert sample(body, "netd_firewall_rules") > 0
        assert sample(body, "netd_api_requests_total", route="/v1/networks/{name}", status="404") == 1
        assert sample(body, "netd_api_requests_total", route="/v1/networks", method="GET", status="200") >= 1
        assert "netd_dns_queries_total" in body
        # the UDS API serves the same registry
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(host.run_dir / "netd.sock"))
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: netd\r\n\r\n")
            raw = b"".join(iter(lambda: s.recv(65536), b""))
        assert raw.split(b" ", 2)[1] == b"200" and b"netd_build_info{" in raw


def test_interface_counters_are_the_kernels(tmp_path: Path) -> None:
    with running_host(tmp_path) as host:
        _, ep2 = _setup(host)
        ip2 = str(ep2["IPv4Address"]).split("/")[0]
        assert ping(host.ns("m1"), ip2, count=5, wait=1)  # five echoes: the counters below count them
        veths = [
            line.split(": ")[1].split("@")[0]
            for line in in_ns(host.path, "ip", "-o", "link", "show", "type", "veth").stdout.splitlines()
            if "uplink" not in line  # the test host's own uplink is a veth too
        ]
        assert len(veths) == 2
        _, body = scrape(host)
        kernel = {
            link["ifname"]: link["stats64"]
            for link in json.loads(in_ns(host.path, "ip", "-s", "-j", "link", "show", "type", "veth").stdout)
        }
        for ifname in veths:
            rx = sample(body, "netd_interface_receive_packets_total", interface=ifname, kind="veth", network="m")
            tx = sample(body, "netd_interface_transmit_bytes_total", interface=ifname, kind="veth")
            assert rx >= 5  # the pings (plus ARP / IPv6 noise)
            # read after the scrape: the kernel's counters are at least what netd reported, and close to it
            assert rx <= kernel[ifname]["rx"]["packets"] <= rx + 10
            assert tx <= kernel[ifname]["tx"]["bytes"] <= tx + 2000
        bridge = in_ns(host.path, "ip", "-o", "link", "show", "type", "bridge").stdout
        br = next(line.split(": ")[1] for line in bridge.splitlines() if "netd0" not in line)
        assert sample(body, "netd_interface_receive_packets_total", interface=br, kind="bridge", network="m") >= 0


def test_metrics_off_with_empty_listen(tmp_path: Path) -> None:
    with running_host(tmp_path, config='[metrics]\nlisten = ""\n') as host:
        r = in_ns(host.path, sys.executable, "-c", SCRAPE, check=False)
        assert r.returncode != 0 and "Connection refused" in r.stderr
        assert host.api.ok("GET", "/v1/status")["metrics"] == "off"


def test_bad_listen_address_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[metrics]\nlisten = "localhost"\n')
    from netdtest import NETD

    r = subprocess.run([NETD, "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "metrics.listen" in r.stderr and "HOST:PORT" in r.stderr
