"""The doctor's checks are pure: facts in, findings (each problem with a fix) out."""

from __future__ import annotations

from ipaddress import ip_network

from samples import one_endpoint_state

from netd.core.model import DesiredState
from netd.ops.doctor import Facts, ForwardChain, diagnose, report


def _state(mtu: int | None = None) -> DesiredState:
    return one_endpoint_state(mtu)


def _healthy() -> Facts:
    return Facts(
        sysctls={"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2"},
        routes=[(ip_network("10.0.0.0/24"), "eth0"), (ip_network("172.30.0.0/24"), "br-app")],
        default_dev="eth0",
        link_mtu={"eth0": 1500},
        global_links=["eth0"],
        last_success_age=3.0,
    )


def _by_check(facts: Facts, state: DesiredState | None = None) -> dict[str, tuple[str, str, str]]:
    return {f.check: (f.status, f.message, f.fix) for f in diagnose(facts, state or _state(), ip_forward=True)}


def test_healthy_host_has_no_problem() -> None:
    found = _by_check(_healthy())
    assert {k: v[0] for k, v in found.items()} == {
        "ip_forward": "ok",
        "foreign_forward_drop": "ok",
        "br_netfilter": "ok",
        "rp_filter": "ok",
        "subnet_overlap": "ok",
        "mtu": "ok",
        "kernel_features": "ok",
        "last_reconcile": "ok",
    }
    assert report(diagnose(_healthy(), _state(), True))["status"] == "ok"


def test_each_problem_comes_with_a_fix() -> None:
    f = _healthy()
    f.sysctls["net.ipv4.ip_forward"] = "0"
    f.sysctls["net.ipv4.conf.all.rp_filter"] = "1"
    f.global_links = ["eth0", "wg0"]
    f.routes.append((ip_network("172.30.0.0/25"), "wg0"))
    f.forward_chains = [ForwardChain("ip", "filter", "FORWARD", "drop")]
    f.br_netfilter = True
    f.sysctls["net.bridge.bridge-nf-call-iptables"] = "1"
    f.reconcile_errors = {"n" * 64: "bridge br-app: create failed: Operation not supported"}
    f.last_success_age = 1000.0
    found = _by_check(f, _state(mtu=9000))
    for check in ("ip_forward", "subnet_overlap", "kernel_features", "last_reconcile"):
        assert found[check][0] == "fail", check
    for check in ("foreign_forward_drop", "br_netfilter", "rp_filter", "mtu"):
        assert found[check][0] == "warn", check
    assert all(fix for status, _, fix in found.values() if status != "ok")
    assert "172.30.0.0/25 dev wg0" in found["subnet_overlap"][1]
    assert "DOCKER-USER" in found["foreign_forward_drop"][2] and "br-app" in found["foreign_forward_drop"][2]
    assert "rp_filter=2" in found["rp_filter"][2]
    assert "com.docker.network.driver.mtu=1500" in found["mtu"][2]


def test_firewalld_zone_advice() -> None:
    f = _healthy()
    f.foreign_tables = ["inet firewalld"]
    status, _, fix = _by_check(f)["foreign_forward_drop"]
    assert status == "warn" and "--zone=trusted" in fix and "br-app" in fix


def test_never_reconciled_fails() -> None:
    f = _healthy()
    f.last_success_age = None
    assert _by_check(f)["last_reconcile"][0] == "fail"


def test_mount_namespace_visibility() -> None:
    f = _healthy()
    f.mount_ns = (False, "cannot open /proc/1/ns/mnt (Permission denied): netns are mounted in netd's own")
    assert _by_check(f)["netns_visibility"][0] == "warn"
    f.mount_ns = (True, "netns are mounted from the mount namespace /proc/1/ns/mnt")
    assert _by_check(f)["netns_visibility"][0] == "ok"
