"""podman (Debian's 4.3, CNI backend) running containers on a netd network through the ``netd`` CNI plugin."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from netdtest import Host, in_ns, running_host, source_seen_outside
from podmantest import Podman, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))
SUBNET = "172.30.60"


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[Host, Podman]]:
    with running_host(tmp_path) as host:
        host.ctl("network", "create", "--subnet", f"{SUBNET}.0/24", "app")
        podman = Podman(tmp_path, host.path, str(host.run_dir / "netd.sock"), "app", host.run_dir / "pod")
        try:
            podman.import_busybox()
            yield host, podman
        finally:
            podman.cleanup()


def _endpoints(host: Host) -> dict[str, dict[str, str]]:
    """The app network's endpoints by container id."""
    eps = host.api.ok("GET", "/v1/networks/app")["Containers"].values()
    return {ep["ContainerID"]: ep for ep in eps}


def _host_veths(host: Host) -> list[str]:
    links = json.loads(in_ns(host.path, "ip", "-j", "link", "show", "type", "veth").stdout)
    return [link["ifname"] for link in links if link["ifname"] != "uplink"]


def test_podman_containers_on_a_netd_network(pod: tuple[Host, Podman]) -> None:
    host, podman = pod
    a = podman.run("alpha", "--network", "app")
    b = podman.run("beta", "--network", "app", "-p", "18080:80", cmd=("httpd", "-f", "-p", "80", "-h", "/www"))
    eps = _endpoints(host)
    assert set(eps) == {a, b}  # netd keeps podman's container ids
    ip_a, ip_b = eps[a]["IPv4Address"].split("/")[0], eps[b]["IPv4Address"].split("/")[0]
    # the address netd gave is the one inside the container; podman wrote netd's resolver into resolv.conf
    assert f"inet {ip_a}/24" in podman("exec", "alpha", "ip", "-4", "addr", "show", "eth0").stdout
    assert f"nameserver {SUBNET}.1" in podman("exec", "alpha", "cat", "/etc/resolv.conf").stdout
    # by address and by name, both ways
    assert podman("exec", "alpha", "ping", "-c", "1", "-W", "5", ip_b, check=False).returncode == 0
    assert podman("exec", "beta", "ping", "-c", "1", "-W", "5", ip_a, check=False).returncode == 0
    r = podman("exec", "alpha", "ping", "-c", "1", "-W", "5", "beta", check=False)
    assert r.returncode == 0 and ip_b in r.stdout, r.stdout + r.stderr
    r = podman("exec", "beta", "ping", "-c", "1", "-W", "5", "alpha", check=False)
    assert r.returncode == 0 and ip_a in r.stdout, r.stdout + r.stderr
    # out through NAT to the outside namespace: the outside sees the host's uplink address
    assert podman("exec", "alpha", "ping", "-c", "1", "-W", "5", host.outside_ip, check=False).returncode == 0
    assert source_seen_outside(host, eps[a]["NetnsPath"]) == host.uplink_ip
    # -p 18080:80: the published port answers on the host namespace's address, from outside
    assert eps[b]["Ports"] == [{"HostIp": "", "HostPort": 18080, "ContainerPort": 80, "Proto": "tcp"}]
    page = in_ns(host.outside_path, "wget", "-q", "-O", "-", "-T", "5", f"http://{host.uplink_ip}:18080/",
                 check=False)  # fmt: skip
    if page.returncode != 0:  # no wget on the machine: a Python client
        code = (
            "import urllib.request; print(urllib.request.urlopen("
            f"'http://{host.uplink_ip}:18080/', timeout=5).read().decode())"
        )
        page = in_ns(host.outside_path, "python3", "-c", code)
    assert "hello from podman" in page.stdout
    # podman rm -f: CNI DEL, the endpoint and its address are gone
    podman("rm", "-f", "-t", "0", "alpha")
    assert set(_endpoints(host)) == {b}
    c = podman.run("gamma", "--network", "app", "--ip", ip_a)  # the address is free again
    assert _endpoints(host)[c]["IPv4Address"] == f"{ip_a}/24"


def test_podman_rm_after_netd_was_killed(pod: tuple[Host, Podman]) -> None:
    host, podman = pod
    a = podman.run("delta", "--network", "app")
    assert set(_endpoints(host)) == {a} and len(_host_veths(host)) == 1
    host.stop(signal.SIGKILL)
    host.start()
    podman("rm", "-f", "-t", "0", "delta")  # CNI DEL against the restarted daemon
    assert _endpoints(host) == {}
    assert _host_veths(host) == []
    assert podman("ps", "-a", "-q").stdout.strip() == ""
