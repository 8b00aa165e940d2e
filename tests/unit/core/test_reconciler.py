"""The reconciler orchestrates only: observe -> plan -> apply the plan in its order, against a fake kernel.

Every effect (netns markers, the firewall, conntrack flushes, route_localnet) is a plan action, so a dry run
shows it and a real run does nothing else; a failure is recorded against its owner and the rest goes ahead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from samples import EP_ID, NET_ID, one_endpoint_state

from netd.core.actions import Scope
from netd.core.config import Settings
from netd.core.errors import KernelError
from netd.core.linkspec import BridgeSpec, ObservedChild, ObservedHost, ObservedLink, VethSpec
from netd.core.model import DesiredState, PortMapping
from netd.core.ruleset import Ruleset
from netd.engine.reconciler import Reconciler
from netd.ops.metrics import ReconcileStats


class FakeKernel:
    """Just enough kernel: links by name, named netns, markers, sysctls; every change is logged in ``calls``."""

    def __init__(self) -> None:
        self.links: dict[str, ObservedLink] = {}
        self.netns: set[str] = set()
        self.marked: set[str] = set()
        self.sysctls: dict[str, str] = {"net.ipv4.ip_forward": "1"}
        self.calls: list[str] = []
        self.fail: dict[str, str] = {}  # call name -> error message

    def _do(self, call: str) -> None:
        self.calls.append(call)
        name = call.split(" ")[0]
        if name in self.fail:
            raise KernelError(self.fail[name])

    def netns_path(self, name: str) -> str:
        return f"/run/netns/{name}"

    def ns_alive(self, path: str) -> bool:
        return path.rpartition("/")[2] in self.netns

    def ns_identity(self, path: str) -> int | None:
        return None

    def forget_netns(self, path: str) -> None:
        pass

    def release_netns_sockets(self) -> None:
        self.released = getattr(self, "released", 0) + 1

    def owned_netns(self, names: Collection[str] | None = None) -> set[str]:
        return set(self.marked) if names is None else self.marked & set(names)

    def mark_netns(self, name: str, owned: bool) -> None:
        self._do(f"mark {name} {owned}")
        (self.marked.add if owned else self.marked.discard)(name)

    async def ensure_netns(self, name: str) -> bool:
        self._do(f"netns {name}")
        self.netns.add(name)
        return True

    async def remove_netns(self, name: str) -> None:
        self._do(f"rmnetns {name}")
        self.netns.discard(name)

    async def observe(self, names: Collection[str] | None = None) -> ObservedHost:
        host = ObservedHost()
        for link in self.links.values():
            if names is not None and link.ifname not in names:
                continue
            host.by_name[link.ifname] = link
            host.by_index[link.index] = link
            if link.owner and link.kind == "bridge":
                host.bridges[link.owner] = link
            elif link.owner and link.kind == "veth":
                host.veths[link.owner] = link
        return host

    def _add(self, name: str, kind: str, owner: str, **kw: Any) -> ObservedLink:
        link = ObservedLink(
            index=len(self.links) + 10, ifname=name, kind=kind, owner=owner, up=True, master=None, **kw
        )
        self.links[name] = link
        return link

    async def ensure_bridge(self, spec: BridgeSpec) -> None:
        self._do(f"bridge {spec.ifname}")
        self._add(
            spec.ifname, "bridge", spec.owner, mtu=spec.mtu or 1500, mac=spec.mac or "", addresses=spec.addresses
        )

    async def ensure_veth(self, spec: VethSpec, *, seen_missing: bool = False, announce: bool = True) -> None:
        self._do(f"veth {spec.host_ifname}")
        if spec.bridge not in self.links:
            raise KernelError(f"veth {spec.host_ifname}: bridge {spec.bridge} does not exist")
        link = self._add(spec.host_ifname, "veth", spec.owner, mtu=1500, mac="")
        self.links[spec.host_ifname] = ObservedLink(**{**link.__dict__, "master": self.links[spec.bridge].index})

    async def delete_links(self, ifnames: Sequence[str]) -> None:
        self._do("delete " + ",".join(ifnames))
        for n in ifnames:
            self.links.pop(n, None)

    async def observe_children(self, paths: Collection[str]) -> dict[str, ObservedChild]:
        return {}

    async def observe_peers(self, peers: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
        return {}  # the namespace side: in sync (the integration tests drift it for real)

    async def get_sysctl(self, key: str, ns: object = None) -> str:
        if key not in self.sysctls:
            raise KernelError(f"{key}: no such file")
        return self.sysctls[key]

    async def set_sysctl(self, key: str, value: str, ns: object = None) -> None:
        self._do(f"sysctl {key}={value}")
        self.sysctls[key] = value

    async def flush_udp_conntrack(self, udp: Iterable[tuple[int, str | None, int]]) -> int:
        self._do("conntrack " + ",".join(f"{v}/{ip}/{port}" for v, ip, port in udp))
        return 0


class FakeFirewall:
    name = "fake"

    def __init__(self) -> None:
        self.loaded: Ruleset | None = None
        self.fail = ""

    async def apply(self, rules: Ruleset) -> None:
        if self.fail:
            raise KernelError(self.fail)
        self.loaded = rules

    async def in_sync(self, rules: Ruleset) -> bool:
        return self.loaded == rules

    async def cleanup(self) -> None:
        self.loaded = None


class Rig:
    def __init__(self, tmp_path: Path, state: DesiredState) -> None:
        self.state = state
        self.kernel = FakeKernel()
        self.firewall = FakeFirewall()
        self.stats = ReconcileStats()
        self.pruned: list[set[str]] = []

        async def prune(ids: set[str], why: str) -> None:
            assert not self.rec.lock.locked(), "prune called back into the service under the reconciler lock"
            self.pruned.append(ids)

        self.rec = Reconciler(
            Settings(state_dir=tmp_path, run_dir=tmp_path / "run"),
            self.kernel,  # type: ignore[arg-type]
            self.firewall,  # type: ignore[arg-type]
            lambda: self.state,
            prune,
            self.stats,
        )

    def run(self, scope: Scope | None = None, reason: str = "timer") -> dict[str, str]:
        return asyncio.run(self.rec.apply(scope or Scope.everything(), reason))


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path, one_endpoint_state())


def test_a_full_pass_applies_the_plan_in_its_order_and_then_is_in_sync(rig: Rig) -> None:
    assert rig.run(reason="start") == {}
    assert rig.kernel.calls == ["mark web True", "netns web", "bridge br-app", "veth vethe"]
    assert rig.firewall.loaded is not None  # between the bridge and the veth (the plan's order)
    assert (rig.stats.runs, rig.stats.last_changes, rig.stats.last_errors) == (1, 5, {})
    rig.kernel.calls.clear()
    assert rig.run() == {} and rig.kernel.calls == [] and rig.stats.last_changes == 0


def test_the_dry_run_lists_every_effect_and_changes_nothing(rig: Rig) -> None:
    plan = asyncio.run(rig.rec.dry_run())
    kinds = [d["action"] for d in plan]
    assert kinds == ["MarkNetns", "EnsureNetns", "EnsureBridge", "ApplyFirewall", "EnsureVeth"]
    assert rig.kernel.calls == [] and rig.firewall.loaded is None and rig.stats.runs == 0


def test_a_failure_is_recorded_against_its_owner_and_the_rest_goes_ahead(rig: Rig) -> None:
    rig.kernel.fail["bridge"] = "bridge br-app: create failed: Operation not permitted (1)"
    errors = rig.run()
    assert errors == {
        NET_ID: "bridge br-app: create failed: Operation not permitted (1)",
        EP_ID: "veth vethe: bridge br-app does not exist",
    }
    assert rig.kernel.calls[-1] == "veth vethe"  # tried anyway, after the failed bridge
    assert rig.stats.last_errors == errors and rig.stats.ok == 0


def test_a_firewall_failure_fails_the_networks_in_scope_and_skips_the_conntrack_flush(rig: Rig) -> None:
    assert rig.run() == {}
    rig.state = one_endpoint_state()
    rig.state.endpoints[EP_ID].ports = [PortMapping(host_ip=None, host_port=5353, container_port=53, proto="udp")]
    rig.firewall.fail = "nft: Operation not permitted"
    rig.kernel.calls.clear()
    errors = rig.run(Scope.of(endpoints=[EP_ID]), reason="api")
    assert errors == {"firewall": "nft: Operation not permitted"}  # no network in an endpoint's scope
    assert not any(c.startswith("conntrack") for c in rig.kernel.calls)
    rig.firewall.fail = ""
    rig.kernel.calls.clear()
    assert rig.run(Scope.of(endpoints=[EP_ID]), reason="api") == {}
    # the published UDP port is new: its conntrack entries go, and 127.0.0.1 needs route_localnet (best effort:
    # the fake has no such sysctl file until set)
    assert rig.kernel.calls == ["conntrack 4/None/5353"]


def test_route_localnet_is_a_plan_action_and_its_failure_only_a_warning(rig: Rig) -> None:
    rig.state.endpoints[EP_ID].ports = [PortMapping(host_ip=None, host_port=8080, container_port=80, proto="tcp")]
    key = "net/ipv4/conf/br-app/route_localnet"
    rig.kernel.sysctls[key] = "0"
    assert rig.run() == {}
    assert rig.kernel.calls[-1] == f"sysctl {key}=1" and rig.kernel.sysctls[key] == "1"
    rig.kernel.sysctls[key] = "0"
    rig.kernel.fail["sysctl"] = "no such bridge"
    assert rig.run() == {}  # logged, not an error of the network


def test_removed_objects_are_deleted_and_the_netns_marker_goes_after_the_netns(rig: Rig) -> None:
    assert rig.run() == {}
    rig.kernel.calls.clear()
    rig.state = DesiredState()
    assert rig.run() == {}
    assert rig.kernel.calls == ["delete vethe", "delete br-app", "rmnetns web", "mark web False"]
    assert rig.kernel.marked == set() and rig.kernel.netns == set()


def test_gone_foreign_namespaces_are_pruned_before_the_lock_is_taken(tmp_path: Path) -> None:
    st = one_endpoint_state()
    ep = st.endpoints[EP_ID]
    st.endpoints[EP_ID] = ep.model_copy(update={"netns": None, "netns_path": "/proc/4242/ns/net"})
    del st.netns["web"]
    rig = Rig(tmp_path, st)
    asyncio.run(rig.rec.reconcile())  # the fake prune asserts the reconciler lock is free
    assert rig.pruned == [{EP_ID}]


def test_a_driver_action_is_applied_through_the_kernel_without_the_reconciler_knowing_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_driver_interface import Segment

    from netd.drivers import DRIVERS

    fdb: set[tuple[str, str]] = set()

    async def add_fdb(mac: str, dst: str) -> None:
        rig.kernel.calls.append(f"fdb {mac} {dst}")
        fdb.add((mac, dst))

    rig.kernel.add_fdb = add_fdb  # type: ignore[attr-defined]
    rig.kernel.fdb = fdb  # type: ignore[attr-defined]  # what the driver's observe_extra reads
    monkeypatch.setitem(DRIVERS, "bridge", Segment())
    assert rig.run() == {}
    assert fdb == {("02:42:0a:00:00:09", "192.0.2.9")} and "fdb 02:42:0a:00:00:09 192.0.2.9" in rig.kernel.calls
    rig.kernel.calls.clear()
    assert rig.run() == {} and rig.kernel.calls == []  # observed: nothing more to add


def test_what_netd_changed_on_the_host_is_observed_and_put_back_by_the_plan(rig: Rig) -> None:
    from netd.engine.hostchanges import SysctlChange

    key = "net.ipv6.conf.all.forwarding"
    rig.kernel.sysctls[key] = "1"
    rig.rec.changes.sysctls[key] = SysctlChange("0", "1")  # recorded when the last IPv6 network came
    assert [d["action"] for d in asyncio.run(rig.rec.dry_run())][-1] == "RestoreSysctls"
    assert rig.run() == {}
    assert rig.kernel.sysctls[key] == "0" and not rig.rec.changes.sysctls
