"""Docker's Engine API network routes, driven by the real docker CLI and the Docker SDK for Python."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.types import IPAMConfig, IPAMPool
from netdtest import Host, UDSClient, in_ns, reach

DOCKER = shutil.which("docker")
SUBNET = "172.30.70"


@pytest.fixture
def dhost(tmp_path: Path) -> Iterator[Host]:
    host = Host(tmp_path)
    host.extra_config = f'[docker_api]\nlisten = "unix:{host.run_dir}/docker.sock"\n'
    try:
        host.boot()
        host.start()
        yield host
    except BaseException:
        print(host.log_text()[-5000:])
        raise
    finally:
        host.cleanup()


def _sock(host: Host) -> str:
    return str(host.run_dir / "docker.sock")


def dk(host: Host, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert DOCKER is not None
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{_sock(host)}",
        "DOCKER_CONFIG": str(host.root / "docker-config"),  # never the machine's own contexts or credentials
    }
    env.pop("DOCKER_CONTEXT", None)
    r = subprocess.run([DOCKER, *args], capture_output=True, text=True, env=env, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {r.returncode}: {r.stderr}{r.stdout}")
    return r


needs_cli = pytest.mark.skipif(DOCKER is None, reason="no docker CLI (apt-get install docker.io)")


def test_socket_is_private_and_off_by_default(dhost: Host) -> None:
    mode = os.stat(_sock(dhost)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    assert not (dhost.run_dir / "docker.sock").is_symlink()
    dhost.stop()
    dhost.extra_config = ""
    Path(_sock(dhost)).unlink(missing_ok=True)
    dhost.start()
    assert not Path(_sock(dhost)).exists()  # off unless configured


@needs_cli
def test_docker_cli_network_commands(dhost: Host) -> None:
    host = dhost
    r = dk(host, "version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}")
    assert r.stdout.split() == ["1.48", "linux"]
    opts = ["-o", "com.docker.network.bridge.name=br-dk1", "-o", "com.docker.network.driver.mtu=1400"]
    net_id = dk(
        host, "network", "create", "--subnet", f"{SUBNET}.0/24", "--gateway", f"{SUBNET}.1", *opts,
        "--label", "team=a", "dk1",
    ).stdout.strip()  # fmt: skip
    assert len(net_id) == 64
    br = json.loads(in_ns(host.path, "ip", "-j", "addr", "show", "br-dk1").stdout)[0]
    assert br["mtu"] == 1400 and [a["local"] for a in br["addr_info"] if a["family"] == "inet"] == [f"{SUBNET}.1"]
    dk(host, "network", "create", "--label", "team=b", "dk2")

    def names(*flt: str) -> list[str]:
        out = dk(host, "network", "ls", *flt, "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout
        return sorted(out.splitlines())

    assert names() == ["bridge bridge local", "dk1 bridge local", "dk2 bridge local"]
    assert names("--filter", "name=dk") == ["dk1 bridge local", "dk2 bridge local"]
    assert names("--filter", "label=team=a") == ["dk1 bridge local"]
    assert names("--filter", "type=builtin") == ["bridge bridge local"]
    assert names("--filter", f"id={net_id[:10]}") == ["dk1 bridge local"]
    assert dk(host, "network", "ls", "-q", "--no-trunc", "--filter", "name=dk1").stdout.split() == [net_id]
    # inspect: the JSON netd shows, with what Docker clients decode beside it
    (seen,) = json.loads(dk(host, "network", "inspect", "dk1").stdout)
    mine = host.api.ok("GET", "/v1/networks/dk1")
    assert {k: seen[k] for k in mine} == mine
    assert seen["IPAM"]["Config"] == [{"Subnet": f"{SUBNET}.0/24", "Gateway": f"{SUBNET}.1"}]
    assert seen["Labels"] == {"team": "a"} and seen["Options"]["com.docker.network.driver.mtu"] == "1400"
    # connect / disconnect a netd namespace
    host.ctl("netns", "create", "web")
    dk(host, "network", "connect", "--ip", f"{SUBNET}.50", "--alias", "www", "dk1", "web")
    addr = json.loads(in_ns(host.ns("web"), "ip", "-j", "addr", "show", "eth0").stdout)[0]["addr_info"]
    assert [a["local"] for a in addr if a["family"] == "inet"] == [f"{SUBNET}.50"]
    assert reach(host.ns("web"), f"{SUBNET}.1")
    (seen,) = json.loads(dk(host, "network", "inspect", "dk1").stdout)
    (ep,) = seen["Containers"].values()
    assert ep["Name"] == "web" and ep["IPv4Address"] == f"{SUBNET}.50/24" and ep["Aliases"] == ["www"]
    r = dk(host, "network", "rm", "dk1", check=False)  # in use: refused, nothing changes
    assert r.returncode != 0 and "Error response from daemon" in r.stderr and "active endpoints" in r.stderr
    dk(host, "network", "disconnect", "dk1", "web")
    assert in_ns(host.ns("web"), "ip", "link", "show", "eth0", check=False).returncode != 0
    # prune removes unused custom networks only (with filters)
    dk(host, "network", "connect", "dk1", "web")
    r = dk(host, "network", "prune", "-f", "--filter", "label=team=x")
    assert "dk2" not in r.stdout
    r = dk(host, "network", "prune", "-f")
    assert r.stdout.split() == ["Deleted", "Networks:", "dk2"]
    assert names() == ["bridge bridge local", "dk1 bridge local"]
    dk(host, "network", "disconnect", "dk1", "web")
    assert dk(host, "network", "rm", "dk1").stdout.strip() == "dk1"
    assert in_ns(host.path, "ip", "link", "show", "br-dk1", check=False).returncode != 0
    # bad requests: Docker's error answers, nothing changes
    before = host.state_bytes()
    r = dk(host, "network", "create", "--subnet", "300.1.2.0/24", "bad", check=False)
    assert r.returncode != 0 and "Error response from daemon:" in r.stderr and "300.1.2.0/24" in r.stderr
    r = dk(host, "network", "create", "-o", "com.docker.network.bridge.nope=1", "bad", check=False)
    assert r.returncode != 0 and "unknown option" in r.stderr
    r = dk(host, "network", "connect", "bridge", "no-such-thing", check=False)
    assert r.returncode != 0 and "No such container: no-such-thing" in r.stderr
    r = dk(host, "network", "inspect", "nope", check=False)
    assert r.returncode != 0 and "nope" in r.stderr
    r = dk(host, "network", "ls", "--filter", "color=red", check=False)
    assert r.returncode != 0 and "invalid filter 'color'" in r.stderr
    assert host.state_bytes() == before


def test_raw_error_shapes_and_versions(dhost: Host) -> None:
    api = UDSClient(Path(_sock(dhost)))
    status, body = api.request("GET", "/v1.99/networks")
    assert status == 400 and "client version 1.99 is too new" in body["message"]
    status, body = api.request("GET", "/v1.12/networks")
    assert status == 400 and "too old" in body["message"]
    status, body = api.request("GET", "/v1.44/networks/nope")
    assert (status, body) == (404, {"message": "network nope not found"})
    status, body = api.request("POST", "/v1.44/networks/create", raw=b"{not json")
    assert status == 400 and "not valid JSON" in body["message"]
    status, body = api.request("POST", "/networks/create", {"Name": "x", "Scope": "swarm"})
    assert status == 400 and "scope 'swarm'" in body["message"]
    status, body = api.request("GET", "/containers/json")
    assert (status, body) == (404, {"message": "page not found"})
    status, body = api.request("POST", "/networks/create", {"Name": "dup"})
    assert status == 201 and len(body["Id"]) == 64
    status, body = api.request("POST", "/networks/create", {"Name": "dup"})
    assert status == 409 and "already exists" in body["message"]
    status, body = api.request("POST", "/networks/dup/connect", {"Container": ""})
    assert status == 400 and "Container is required" in body["message"]


@pytest.mark.parametrize("version", ["auto", None])
def test_docker_sdk_networks(dhost: Host, version: str | None) -> None:
    host = dhost
    client = docker.DockerClient(base_url=f"unix://{_sock(host)}", version=version)
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"] == "1.48"
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=f"{SUBNET}.0/24", gateway=f"{SUBNET}.1")])
        net = client.networks.create(
            "sdk1", driver="bridge", ipam=ipam, options={"com.docker.network.bridge.enable_icc": "false"},
            labels={"env": "test"},
        )  # fmt: skip
        assert net.name == "sdk1" and net.attrs["Options"] == {"com.docker.network.bridge.enable_icc": "false"}
        assert [n.name for n in client.networks.list(names=["sdk1"])] == ["sdk1"]
        assert [n.name for n in client.networks.list(filters={"label": "env=test"})] == ["sdk1"]
        host.ctl("netns", "create", "app1")
        net.connect("app1", ipv4_address=f"{SUBNET}.9", aliases=["api"])
        net.reload()
        (ep,) = net.attrs["Containers"].values()
        assert ep["Name"] == "app1" and ep["IPv4Address"] == f"{SUBNET}.9/24" and ep["Aliases"] == ["api"]
        assert reach(host.ns("app1"), f"{SUBNET}.1")
        with pytest.raises(docker.errors.APIError) as err:
            net.connect("app1")
        assert err.value.status_code == 403 and "already connected" in str(err.value.explanation)
        net.disconnect("app1")
        with pytest.raises(docker.errors.NotFound) as nf:
            client.networks.get("nope")
        assert "network nope not found" in str(nf.value.explanation)
        with pytest.raises(docker.errors.APIError) as err:
            client.networks.create("sdk1")
        assert err.value.status_code == 409
        assert client.networks.prune() == {"NetworksDeleted": ["sdk1"]}
        assert [n.name for n in client.networks.list()] == ["bridge"]
    finally:
        client.close()


def test_container_is_a_cni_container_id(dhost: Host) -> None:
    """``Container`` may name a container a runtime attached through the CNI plugin, by id or id prefix."""
    from cnitest import Sandboxes, cni, conf

    host = dhost
    host.ctl("network", "create", "--subnet", f"{SUBNET}.0/24", "app")
    host.ctl("network", "create", "--subnet", "172.30.71.0/24", "second")
    boxes = Sandboxes(host.tag)
    try:
        ns = boxes.new("ctr")
        assert cni("ADD", conf(str(host.run_dir / "netd.sock")), container="f00dcafe1234", netns=ns).rc == 0
        api = UDSClient(Path(_sock(host)))
        status, body = api.request("POST", "/v1.48/networks/second/connect", {"Container": "f00dcafe"})
        assert status == 200, body
        eth1 = json.loads(in_ns(ns, "ip", "-j", "addr", "show", "eth1").stdout)[0]["addr_info"]
        assert [a["local"] for a in eth1 if a["family"] == "inet"] == ["172.30.71.2"]
        status, body = api.request("POST", "/v1.48/networks/second/disconnect", {"Container": "f00dcafe1234"})
        assert status == 200, body
        assert in_ns(ns, "ip", "link", "show", "eth1", check=False).returncode != 0
        status, body = api.request("POST", "/v1.48/networks/second/connect", {"Container": "beef"})
        assert status == 404 and body["message"].startswith("No such container: beef")
    finally:
        boxes.cleanup()
