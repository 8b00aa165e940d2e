"""Issue 14: ``network rm --force`` and ``netns rm A B C``: everything they name goes in one change (the veths in
one group delete in the kernel), nothing else is touched.  The cost is measured by bench/batch_remove.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netdtest import Host, foreign_netns, in_ns, reach, running_host

NA = {"Name": "ba", "IPAM": {"Config": [{"Subnet": "172.30.70.0/24"}]}}
NB = {"Name": "bb", "IPAM": {"Config": [{"Subnet": "172.30.71.0/24"}]}}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with running_host(tmp_path) as h:
        h.api.ok("POST", "/v1/networks", NA)
        h.api.ok("POST", "/v1/networks", NB)
        yield h


@pytest.fixture
def test_ns() -> Iterator[str]:
    with foreign_netns() as path:
        yield path


def _link(host: Host, ifname: str) -> bool:
    return in_ns(host.path, "ip", "link", "show", ifname, check=False).returncode == 0


def test_network_rm_force(host: Host, test_ns: str) -> None:
    eps = []
    for i in range(5):
        host.api.ok("POST", "/v1/netns", {"Name": f"n{i}"})
        eps.append(host.api.ok("POST", "/v1/networks/ba/connect", {"Netns": f"n{i}"}))
    eps.append(host.api.ok("POST", "/v1/networks/ba/connect", {"NetnsPath": test_ns}))
    other = host.api.ok("POST", "/v1/networks/bb/connect", {"Netns": "n0"})  # same namespace, other network
    bridge = host.api.ok("GET", "/v1/networks/ba")["Bridge"]
    before = host.state_bytes()
    got, err = host.api.request("DELETE", "/v1/networks/ba")
    assert got == 409, err
    assert "--force" in err["error"]["message"]
    got, err = host.api.request("DELETE", "/v1/networks/ba?force=maybe")
    assert got == 400, err
    assert err["error"]["field"] == "force"
    assert host.state_bytes() == before
    assert all(_link(host, ep["HostInterface"]) for ep in eps)

    host.ctl("network", "rm", "--force", "ba")
    assert host.api.request("GET", "/v1/networks/ba")[0] == 404
    assert not _link(host, bridge)
    assert not any(_link(host, ep["HostInterface"]) for ep in eps)
    assert "eth0" not in in_ns(test_ns, "ip", "-o", "link").stdout  # the foreign namespace's veth went too
    # nothing else: the namespaces stay (a disconnect, not a netns rm), the other network's endpoint works
    assert {ns["Name"] for ns in host.api.ok("GET", "/v1/netns")} == {f"n{i}" for i in range(5)}
    assert Path(test_ns).exists()
    assert _link(host, other["HostInterface"])
    assert reach(host.ns("n0"), "172.30.71.1")
    assert host.api.ok("POST", "/v1/reconcile")["changes"] == 0


def test_netns_rm_many(host: Host) -> None:
    eps = {}
    for name in ("r1", "r2", "r3", "keep"):
        host.api.ok("POST", "/v1/netns", {"Name": name})
        eps[name] = [
            host.api.ok("POST", "/v1/networks/ba/connect", {"Netns": name}),
            host.api.ok("POST", "/v1/networks/bb/connect", {"Netns": name}),
        ]
    out = host.ctl("netns", "rm", "r1", "r2", "nope", "r3", check=False)
    assert out.returncode == 1
    assert out.stdout.split() == ["r1", "r2", "r3"]
    assert "netns 'nope' not found" in out.stderr
    assert {ns["Name"] for ns in host.api.ok("GET", "/v1/netns")} == {"keep"}
    for name in ("r1", "r2", "r3"):
        assert not Path(host.ns(name)).exists()
        assert not any(_link(host, ep["HostInterface"]) for ep in eps[name])
    assert all(_link(host, ep["HostInterface"]) for ep in eps["keep"])
    assert reach(host.ns("keep"), "172.30.70.1")
    assert reach(host.ns("keep"), "172.30.71.1")
    assert len(host.api.ok("GET", "/v1/networks/ba")["Containers"]) == 1
    assert host.api.ok("POST", "/v1/reconcile")["changes"] == 0
    # only unknown names: nothing removed, an error naming them
    out = host.ctl("netns", "rm", "nope", "nada", check=False)
    assert out.returncode == 1
    assert "netns 'nada' not found" in out.stderr
    for body in (None, {"Names": "keep"}, {"Names": [1]}, {"Name": ["keep"]}):
        got, err = host.api.request("DELETE", "/v1/netns", body)
        assert got == 400, err
        assert err["error"]["field"] == "Names"
    assert {ns["Name"] for ns in host.api.ok("GET", "/v1/netns")} == {"keep"}
    # the query form, for a few names
    host.api.ok("POST", "/v1/netns", {"Name": "q1"})
    assert host.api.ok("DELETE", "/v1/netns?name=q1") == {"Removed": ["q1"], "Errors": {}}


def test_many_resolv_conf_files_go_after_the_answer_and_a_new_namespace_keeps_its_own(host: Host) -> None:
    """A batch's resolv.conf files are removed by a worker thread after the change (not before the answer); a
    namespace made again at once gets its file, which the queued removal must not take."""
    etc = host.root / "etc-netns"
    names = [f"m{i}" for i in range(12)]
    for name in names:
        host.api.ok("POST", "/v1/netns", {"Name": name})
        host.api.ok("POST", "/v1/networks/ba/connect", {"Netns": name})
    assert all((etc / name / "resolv.conf").exists() for name in names)
    assert host.api.ok("DELETE", "/v1/netns", {"Names": names})["Removed"] == names
    host.api.ok("POST", "/v1/netns", {"Name": "m3"})
    host.api.ok("POST", "/v1/networks/ba/connect", {"Netns": "m3"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sorted(d.name for d in etc.iterdir()) != ["m3"]:
        time.sleep(0.05)
    assert sorted(d.name for d in etc.iterdir()) == ["m3"]
    assert "nameserver 172.30.70.1" in (etc / "m3" / "resolv.conf").read_text()
