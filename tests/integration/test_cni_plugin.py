"""The CNI plugin, driven the way a runtime drives it: ADD/DEL/CHECK ordering and idempotence (the CNI spec's
conformance cases), VERSION, STATUS, GC, runtimeConfig, error objects, and a daemon restart between ADD and DEL."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cnitest import Sandboxes, cni, conf
from netdtest import VENV_BIN, Host, in_ns, reach, running_host, sh

SUBNET = "172.30.40"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Host, Sandboxes, dict[str, object]]]:
    with running_host(tmp_path) as host:
        boxes = Sandboxes(host.tag)
        try:
            host.ctl("network", "create", "--subnet", f"{SUBNET}.0/24", "app")
            yield host, boxes, conf(str(host.run_dir / "netd.sock"))
        finally:
            boxes.cleanup()


def _addrs(netns: str, ifname: str = "eth0") -> list[str]:
    r = in_ns(netns, "ip", "-j", "addr", "show", ifname, check=False)
    if r.returncode != 0:
        return []
    info = json.loads(r.stdout)[0]["addr_info"]
    return [f"{a['local']}/{a['prefixlen']}" for a in info if a["family"] == "inet"]


def _containers(host: Host, net: str = "app") -> list[dict[str, object]]:
    return list(host.api.ok("GET", f"/v1/networks/{net}")["Containers"].values())


def test_version_lists_the_spec_versions() -> None:
    r = cni("VERSION", None)
    assert r.rc == 0, r.stderr
    assert r.out["cniVersion"] == "1.1.0"
    assert {"0.4.0", "1.0.0", "1.1.0"} <= set(r.out["supportedVersions"])


def test_add_check_del_in_order_and_idempotent(env: tuple[Host, Sandboxes, dict[str, object]]) -> None:
    host, boxes, cfg = env
    ns = boxes.new("a")
    r = cni("ADD", cfg, container="c0ffee01", netns=ns)
    assert r.rc == 0, r.stderr
    res = r.out
    assert res["cniVersion"] == "1.0.0"
    assert res["interfaces"] == [{"name": "eth0", "mac": res["interfaces"][0]["mac"], "sandbox": ns}]
    (ip,) = res["ips"]
    assert ip["address"].startswith(f"{SUBNET}.") and ip["gateway"] == f"{SUBNET}.1" and ip["interface"] == 0
    assert "version" not in ip  # 1.0.0 results have none
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": f"{SUBNET}.1"}]
    assert res["dns"] == {"nameservers": [f"{SUBNET}.1"]}  # netd's resolver for the network
    # the kernel says the same, and traffic flows
    assert _addrs(ns) == [ip["address"]]
    mac = json.loads(in_ns(ns, "ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
    assert mac == res["interfaces"][0]["mac"]
    assert reach(ns, f"{SUBNET}.1")
    assert reach(ns, host.outside_ip)  # NAT out of the host
    # netd keeps the container id; inspect shows it
    (ep,) = _containers(host)
    assert ep["ContainerID"] == "c0ffee01" and ep["NetnsPath"] == ns and ep["Interface"] == "eth0"
    assert "c0ffee01" in host.ctl("network", "inspect", "app").stdout

    prev = {**cfg, "prevResult": res}
    r = cni("CHECK", prev, container="c0ffee01", netns=ns)
    assert (r.rc, r.out) == (0, None), r.stderr

    # a second ADD for the same attachment is refused and changes nothing
    before = host.state_bytes()
    r = cni("ADD", cfg, container="c0ffee01", netns=ns)
    assert r.rc != 0 and r.code is not None and r.out["msg"]
    assert host.state_bytes() == before

    r = cni("DEL", prev, container="c0ffee01", netns=ns)
    assert (r.rc, r.out) == (0, None), r.stderr
    assert _addrs(ns) == [] and _containers(host) == []
    r = cni("DEL", prev, container="c0ffee01", netns=ns)  # a second DEL succeeds
    assert (r.rc, r.out) == (0, None), r.stderr
    r = cni("DEL", cfg, container="unknown0")  # no netns, never added
    assert (r.rc, r.out) == (0, None), r.stderr
    r = cni("CHECK", prev, container="c0ffee01", netns=ns)  # CHECK after DEL: the container is unknown
    assert r.rc != 0 and r.code == 3
    # the address is free again: an ADD asking for it gets it
    ask = {**cfg, "runtimeConfig": {"ips": [ip["address"]]}}
    r = cni("ADD", ask, container="c0ffee02", netns=ns)
    assert r.rc == 0 and r.out["ips"][0]["address"] == ip["address"], r.out


def _check_in(ns: str, ep: dict[str, str]) -> list[str]:
    code = (
        "import json, sys; from netd.cli.cni_check import check_namespace; "
        f"print(json.dumps(check_namespace({ns!r}, 'eth0', json.loads(sys.argv[1]), None)))"
    )
    return json.loads(sh(str(VENV_BIN / "python"), "-c", code, json.dumps(ep)).stdout)


def test_check_reads_interface_address_and_route_in_the_namespace(tmp_path: Path) -> None:
    """The namespace reader CHECK uses, on a namespace the test sets up by hand (netd would repair drift in its
    own endpoints within milliseconds, so the misses are made here)."""
    boxes = Sandboxes("chk")
    try:
        ns = boxes.new("x")
        ep = {"MacAddress": "02:00:00:00:00:07", "IPv4Address": "10.77.0.7/24", "Gateway": "10.77.0.1"}
        assert _check_in(ns, ep) == ["interface eth0 is missing"]
        mac = "02:00:00:00:00:08"
        in_ns(ns, "ip", "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name", "p0")
        in_ns(ns, "ip", "link", "set", "eth0", "up")
        assert _check_in(ns, ep) == [
            "eth0 has MAC 02:00:00:00:00:08, expected 02:00:00:00:00:07",
            "address 10.77.0.7/24 is missing on eth0",
            "default route via 10.77.0.1 is missing",
        ]
        in_ns(ns, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:07")
        in_ns(ns, "ip", "addr", "add", "10.77.0.7/24", "dev", "eth0")
        assert _check_in(ns, ep) == ["default route via 10.77.0.1 is missing"]
        in_ns(ns, "ip", "route", "add", "default", "via", "10.77.0.1")
        assert _check_in(ns, ep) == []
    finally:
        boxes.cleanup()


def test_check_through_the_plugin(env: tuple[Host, Sandboxes, dict[str, object]]) -> None:
    _host, boxes, cfg = env
    ns = boxes.new("chk")
    res = cni("ADD", cfg, container="chk1", netns=ns).out
    prev = {**cfg, "prevResult": res}
    assert cni("CHECK", prev, container="chk1", netns=ns).rc == 0
    # an ADD result that no longer matches what netd holds (netd itself repairs drift in the namespace within
    # milliseconds, which is why the namespace misses are tested on a hand-made namespace above)
    stale = json.loads(json.dumps(prev))
    stale["prevResult"]["ips"][0]["address"] = f"{SUBNET}.250/24"
    r = cni("CHECK", stale, container="chk1", netns=ns)
    assert r.rc != 0 and r.code == 101, r.out
    assert f"the ADD result's address {SUBNET}.250/24 is no longer netd's" in r.out["details"]
    r = cni("CHECK", prev, container="chk1", netns=ns, ifname="eth5")
    assert r.rc != 0 and r.code == 3, r.out  # nothing of that container with that interface
    assert cni("DEL", prev, container="chk1", netns=ns).rc == 0
    old = conf(str(cfg["socket"]), version="0.3.1")
    assert cni("CHECK", old, container="chk1", netns=ns).code == 1  # CHECK needs 0.4.0 or later


def test_runtime_config_ports_ips_mac_aliases(env: tuple[Host, Sandboxes, dict[str, object]]) -> None:
    host, boxes, cfg = env
    web, client = boxes.new("web"), boxes.new("cl")
    rt = {
        "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
        "ips": [f"{SUBNET}.77/24"],
        "mac": "02:aa:bb:cc:dd:07",
        "aliases": {"app": ["www"]},
    }
    args = "IgnoreUnknown=1;K8S_POD_NAME=webby"  # podman passes the container name so
    r = cni("ADD", {**cfg, "runtimeConfig": rt}, container="web1", netns=web, args=args)
    assert r.rc == 0, r.out
    assert r.out["ips"][0]["address"] == f"{SUBNET}.77/24"
    assert r.out["interfaces"][0]["mac"] == "02:aa:bb:cc:dd:07"
    (ep,) = _containers(host)
    assert ep["Aliases"] == ["www", "webby"]
    assert ep["Ports"] == [{"HostIp": "", "HostPort": 18080, "ContainerPort": 80, "Proto": "tcp"}]
    assert cni("ADD", cfg, container="cl1", netns=client).rc == 0
    # names resolve through netd's resolver (the result's dns), the published port answers on the host address
    for name in ("www", "webby"):
        out = in_ns(client, "dig", "+short", f"@{SUBNET}.1", name).stdout.split()
        assert out == [f"{SUBNET}.77"], (name, out)
    server = in_ns_background(web, 80)
    try:
        got = in_ns(host.outside_path, "python3", "-c", _FETCH.format(host=host.uplink_ip, port=18080)).stdout
        assert got.strip() == "hello-from-web"
    finally:
        server.kill()
        server.wait()
    # bad runtimeConfig: a clear error object, nothing attached
    bad = {**cfg, "runtimeConfig": {"mac": "01:00:5e:00:00:01"}}
    r = cni("ADD", bad, container="bad1", netns=boxes.new("bad"))
    assert r.rc != 0 and r.code == 7 and "multicast" in r.out["details"], r.out
    assert len(_containers(host)) == 2


_FETCH = (
    "import socket; s = socket.create_connection(('{host}', {port}), timeout=5); "
    "print(s.recv(100).decode().strip())"
)


def in_ns_background(netns: str, port: int) -> subprocess.Popen[str]:
    code = (
        "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('0.0.0.0', {port})); s.listen(5); print('ready', flush=True)\n"
        "while True:\n c, _ = s.accept(); c.sendall(b'hello-from-web\\n'); c.close()"
    )
    p = subprocess.Popen(["nsenter", f"--net={netns}", "python3", "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"  # listening
    return p


def test_unreachable_netd_status_and_errors(env: tuple[Host, Sandboxes, dict[str, object]]) -> None:
    host, boxes, cfg = env
    ns = boxes.new("u")
    r = cni("STATUS", cfg)
    assert (r.rc, r.out) == (0, None), r.stderr
    r = cni("STATUS", {**cfg, "network": "nope"})  # an ADD could not attach to it
    assert r.code == 50 and "no network 'nope'" in r.out["msg"], r.out
    host.stop()
    r = cni("ADD", cfg, container="u1", netns=ns)
    assert r.rc != 0 and r.code == 11 and r.out["cniVersion"] == "1.0.0", r.out  # try again later
    assert "netd is not reachable" in r.out["msg"]
    assert cni("STATUS", cfg).code == 50
    host.start()
    # bad configuration and environment: the spec's codes
    assert cni("ADD", {**cfg, "cniVersion": "9.9.9"}, container="u1", netns=ns).code == 1
    assert cni("ADD", "{not json", container="u1", netns=ns).code == 6
    assert cni("ADD", cfg, netns=ns).code == 4  # no CNI_CONTAINERID
    assert cni("ADD", {**cfg, "network": "nope"}, container="u1", netns=ns).code == 7
    assert cni("BOGUS", cfg).code == 4
    assert _containers(host) == []


def test_del_after_netd_killed_and_restarted(env: tuple[Host, Sandboxes, dict[str, object]]) -> None:
    host, boxes, cfg = env
    ns = boxes.new("k")
    res = cni("ADD", cfg, container="kill1", netns=ns).out
    assert len(_host_veths(host)) == 1
    host.stop(signal.SIGKILL)
    host.start()
    r = cni("DEL", {**cfg, "prevResult": res}, container="kill1", netns=ns)
    assert (r.rc, r.out) == (0, None), r.stderr
    assert _addrs(ns) == [] and _containers(host) == []
    assert _host_veths(host) == []
    # DEL once the runtime has removed the namespace too
    ns2 = boxes.new("k2")
    assert cni("ADD", cfg, container="kill2", netns=ns2).rc == 0
    host.stop(signal.SIGKILL)
    boxes.remove(ns2)
    host.start()
    assert cni("DEL", cfg, container="kill2", netns=ns2).rc == 0
    assert _containers(host) == []
    assert _host_veths(host) == []


def _host_veths(host: Host) -> list[str]:
    """netd's host-side veths (the uplink is a veth too)."""
    links = json.loads(in_ns(host.path, "ip", "-j", "link", "show", "type", "veth").stdout)
    return [link["ifname"] for link in links if link["ifname"] != "uplink"]


def test_gc_removes_cni_attachments_the_runtime_does_not_list(
    env: tuple[Host, Sandboxes, dict[str, object]],
) -> None:
    host, boxes, cfg = env
    a, b, own = boxes.new("ga"), boxes.new("gb"), "mine"
    assert cni("ADD", cfg, container="keep", netns=a).rc == 0
    assert cni("ADD", cfg, container="stale", netns=b).rc == 0
    host.ctl("netns", "create", own)
    host.ctl("network", "connect", "app", own)  # not made through CNI: GC leaves it alone
    gc = {**cfg, "cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    r = cni("GC", gc)
    assert (r.rc, r.out) == (0, None), r.stderr
    left = sorted(str(e["ContainerID"]) or str(e["Netns"]) for e in _containers(host))
    assert left == ["keep", own]
    assert _addrs(b) == [] and len(_addrs(a)) == 1
