"""Bad input: a clear error naming the field and the reason, and no change in the kernel or the state file."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from netdtest import NETD, Host, in_ns, running_host

SUBNET = {"IPAM": {"Config": [{"Subnet": "172.30.40.0/24"}]}}


@pytest.fixture
def ready(host: Host) -> Host:
    host.api.ok("POST", "/v1/networks", {"Name": "taken", **SUBNET})
    host.api.ok("POST", "/v1/netns", {"Name": "n1"})
    host.api.ok("POST", "/v1/netns", {"Name": "n2"})
    host.api.ok(
        "POST",
        "/v1/networks/taken/connect",
        {"Netns": "n1", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "172.30.40.5"}}},
    )
    return host


def _net(name: str, **kw: Any) -> dict[str, Any]:
    return {"Name": name, **kw}


def _pool(**cfg: str) -> dict[str, Any]:
    return {"IPAM": {"Config": [cfg]}}


CASES: list[tuple[str, str, Any, int, str]] = [
    ("invalid CIDR", "/v1/networks", _net("a", **_pool(Subnet="172.30.41.0/33")), 400, "not a valid CIDR"),
    (
        "gateway outside",
        "/v1/networks",
        _net("a", **_pool(Subnet="172.30.41.0/24", Gateway="172.30.42.1")),
        400,
        "gateway 172.30.42.1 is outside subnet",
    ),
    ("overlap", "/v1/networks", _net("a", **_pool(Subnet="172.30.40.128/25")), 409, "overlaps network 'taken'"),
    (
        "long bridge name",
        "/v1/networks",
        _net("a", Options={"com.docker.network.bridge.name": "br-0123456789abc"}),
        400,
        "1-15 bytes",
    ),
    ("duplicate network", "/v1/networks", _net("taken"), 409, "already exists"),
    ("unknown driver", "/v1/networks", _net("a", Driver="weave"), 400, "unknown driver"),
    (
        "unknown option",
        "/v1/networks",
        _net("a", Options={"com.docker.network.bridge.colour": "red"}),
        400,
        "unknown option",
    ),
    (
        "ip outside",
        "/v1/networks/taken/connect",
        {"Netns": "n2", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.1.1.1"}}},
        400,
        "outside subnet",
    ),
    (
        "ip taken",
        "/v1/networks/taken/connect",
        {"Netns": "n2", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "172.30.40.5"}}},
        409,
        "already in use",
    ),
    ("unknown netns", "/v1/networks/taken/connect", {"Netns": "nope"}, 404, "netns 'nope' not found"),
    ("unknown network", "/v1/networks/nope/connect", {"Netns": "n2"}, 404, "network 'nope' not found"),
    ("already connected", "/v1/networks/taken/connect", {"Netns": "n1"}, 409, "already connected"),
    ("duplicate netns", "/v1/netns", {"Name": "n1"}, 409, "already exists"),
    ("bad netns name", "/v1/netns", {"Name": "../etc"}, 400, "not valid"),
    (
        "gone netns path",
        "/v1/networks/taken/connect",
        {"NetnsPath": "/proc/999999999/ns/net"},
        404,
        "not a network namespace",
    ),
]


@pytest.mark.parametrize(("what", "url", "body", "status", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_changes_nothing(
    ready: Host, what: str, url: str, body: Any, status: int, needle: str
) -> None:
    kernel = ready.kernel_snapshot()
    state = ready.state_bytes()
    got, err = ready.api.request("POST", url, body)
    assert got == status, err
    assert needle in err["error"]["message"]
    assert ready.kernel_snapshot() == kernel
    assert ready.state_bytes() == state


def test_remove_network_with_endpoints_and_malformed_json(ready: Host) -> None:
    kernel = ready.kernel_snapshot()
    got, err = ready.api.request("DELETE", "/v1/networks/taken")
    assert got == 409 and "disconnect them first" in err["error"]["message"]
    got, err = ready.api.request("POST", "/v1/networks", raw=b"{not json")
    assert got == 400 and err["error"]["code"] == "invalid" and "not valid JSON" in err["error"]["message"]
    got, err = ready.api.request("POST", "/v1/networks", raw=b"[1, 2]")
    assert got == 400
    assert ready.kernel_snapshot() == kernel


def test_bridge_name_held_by_a_foreign_interface(ready: Host) -> None:
    """A foreign non-bridge interface holds the requested bridge name: refused, foreign link untouched."""
    in_ns(ready.path, "ip", "link", "add", "br-clash", "type", "veth", "peer", "name", "br-clash-p")
    state = ready.state_bytes()
    got, err = ready.api.request(
        "POST", "/v1/networks", _net("clash", Options={"com.docker.network.bridge.name": "br-clash"})
    )
    assert got == 409 and "not a bridge" in err["error"]["message"]
    assert ready.state_bytes() == state
    assert "br-clash@br-clash-p" in in_ns(ready.path, "ip", "-o", "link", "show", "br-clash").stdout


def test_corrupt_state_file_stops_the_daemon(tmp_path: Path) -> None:
    with running_host(tmp_path, start=False) as host:
        host.write_config()
        bad = b'{"schema_version": 1, "networks": {"x": {"id": 5}}}'
        (host.state_dir / "state.json").write_bytes(bad)
        r = subprocess.run(
            ["nsenter", f"--net={host.path}", NETD, "--config", str(host.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode != 0
        assert "state.json" in r.stderr and "will not overwrite" in r.stderr
        assert (host.state_dir / "state.json").read_bytes() == bad
        links = in_ns(host.path, "ip", "-o", "link").stdout
        assert "netd0" not in links


def test_bad_config_stops_the_daemon_naming_the_key(tmp_path: Path) -> None:
    with running_host(tmp_path, start=False, config="[default_bridge]\nbipp = '10.0.0.1/24'\n") as host:
        host.write_config()
        r = subprocess.run(
            ["nsenter", f"--net={host.path}", NETD, "--config", str(host.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2
        assert "default_bridge.bipp: unknown key" in r.stderr
