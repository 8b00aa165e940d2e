"""kill -9 at random moments, with an oracle.

A client runs a random sequence of network create/rm, netns create/rm and connect/disconnect against one
daemon; now and then netd is SIGKILLed: while a request is in flight (often a netns create or rm), while it
starts up and replays its state, and after a "reboot" (the kernel side wiped) in the middle of the replay.
After every restart the oracle checks that

- every change that was answered 2xx is still there, and everything whose removal was answered is gone
  (a request cut by the kill may have happened or not: the daemon's answer decides, then it is definite);
- no two endpoints of a network hold one address;
- after a reconcile, ``check`` is in sync, and the kernel matches the state: one netd veth per endpoint, one
  netns mount per netns, every endpoint's address on its interface inside its namespace.

Bounded: 20 kills.  The test prints the number of operations, kills and violations.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdtest import Host, in_ns, running_host

NETS = {f"c{i}": f"172.29.{10 + i}.0/24" for i in range(3)}
NSES = [f"k{i}" for i in range(6)]
YES, NO, UNKNOWN = "yes", "no", "unknown"


def call(host: Host, method: str, url: str, body: Any = None) -> int | None:
    """The status, or None when the daemon died before answering (the outcome is then unknown)."""
    try:
        status, _ = host.api.request(method, url, body)
        return status
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Model:
    """What the answers said: each object is there (YES), gone (NO) or cut by a kill (UNKNOWN)."""

    nets: dict[str, str] = field(default_factory=lambda: dict.fromkeys(NETS, NO))
    nses: dict[str, str] = field(default_factory=lambda: dict.fromkeys(NSES, NO))
    eps: dict[tuple[str, str], str] = field(default_factory=lambda: {(n, s): NO for n in NETS for s in NSES})

    def possible(self, rng: random.Random, netns_only: bool = False) -> tuple[str, str, Any, list[Any]]:
        """A random operation that the model says should succeed: (method, url, body, objects it touches)."""
        ops: list[tuple[str, str, Any, list[Any]]] = []
        for ns, st in self.nses.items():
            if st == NO:
                ops.append(("POST", "/v1/netns", {"Name": ns}, [("ns", ns)]))
            if st == YES:
                ops.append(("DELETE", f"/v1/netns/{ns}", None, [("ns", ns)]))
        if not netns_only:
            for net, st in self.nets.items():
                if st == NO:
                    body = {"Name": net, "IPAM": {"Config": [{"Subnet": NETS[net]}]}}
                    ops.append(("POST", "/v1/networks", body, [("net", net)]))
                if st == YES and all(self.eps[(net, s)] == NO for s in NSES):
                    ops.append(("DELETE", f"/v1/networks/{net}", None, [("net", net)]))
            for (net, ns), st in self.eps.items():
                if st == NO and self.nets[net] == YES and self.nses[ns] == YES:
                    for _ in range(3):  # connects are the common operation
                        ops.append(("POST", f"/v1/networks/{net}/connect", {"Netns": ns}, [("ep", (net, ns))]))
                if st == YES:
                    ops.append(("POST", f"/v1/networks/{net}/disconnect", {"Netns": ns}, [("ep", (net, ns))]))
        return rng.choice(ops)

    def answered(self, method: str, touched: list[Any], status: int | None) -> None:
        """Apply an answer: 2xx makes the change definite, no answer makes it unknown, 4xx changes nothing."""
        if status is not None and status >= 300:
            return
        for kind, key in touched:
            new = UNKNOWN if status is None else YES if method == "POST" else NO
            table: dict[Any, str] = {"ns": self.nses, "net": self.nets, "ep": self.eps}[kind]
            table[key] = new
            if kind == "ns" and new != YES:  # removing a netns removes its endpoints
                for net in NETS:
                    if self.eps[(net, key)] != NO:
                        self.eps[(net, key)] = new

    def disconnect_answered(self, key: tuple[str, str], status: int | None) -> None:
        if status is None:
            self.eps[key] = UNKNOWN
        elif status < 300:
            self.eps[key] = NO


def actual(host: Host) -> tuple[set[str], set[str], dict[tuple[str, str], str]]:
    nets = {n["Name"]: n for n in host.api.ok("GET", "/v1/networks")}
    nses = {n["Name"] for n in host.api.ok("GET", "/v1/netns")}
    eps = {
        (net, c["Name"]): c["IPv4Address"]
        for net, n in nets.items()
        for c in n["Containers"].values()
        if net in NETS
    }
    return set(nets), nses, eps


def oracle(host: Host, model: Model, cut: dict[str, int]) -> list[str]:
    """Compare the daemon with the model (resolving what kills left unknown), then the kernel with the state."""
    bad: list[str] = []
    nets, nses, eps = actual(host)
    for table, have in ((model.nets, nets), (model.nses, nses), (model.eps, set(eps))):
        for key, st in table.items():
            if st == UNKNOWN:
                cut["done" if key in have else "not done"] += 1
    for name, st in model.nets.items():
        if st == UNKNOWN:
            model.nets[name] = YES if name in nets else NO
        elif (st == YES) != (name in nets):
            bad.append(f"network {name}: answered {'created' if st == YES else 'removed'}, but it is not so")
    for name, st in model.nses.items():
        if st == UNKNOWN:
            model.nses[name] = YES if name in nses else NO
        elif (st == YES) != (name in nses):
            bad.append(f"netns {name}: answered {'created' if st == YES else 'removed'}, but it is not so")
    for key, st in model.eps.items():
        if st == UNKNOWN:
            model.eps[key] = YES if key in eps else NO
        elif (st == YES) != (key in eps):
            bad.append(
                f"endpoint {key}: answered {'connected' if st == YES else 'disconnected'}, but it is not so"
            )
    for net in NETS:
        addrs = [a for (n, _), a in eps.items() if n == net]
        if len(addrs) != len(set(addrs)):
            bad.append(f"network {net}: one address on two endpoints: {sorted(addrs)}")
    bad += kernel_matches_state(host, eps)
    return bad


def kernel_matches_state(host: Host, eps: dict[tuple[str, str], str]) -> list[str]:
    bad: list[str] = []
    host.api.ok("POST", "/v1/reconcile")
    check = host.api.ok("GET", "/v1/check")
    if not check["in_sync"]:
        bad.append(f"check after a reconcile is not in sync: {check['differences'][:3]}")
    state = host.stored_state()
    links = json.loads(in_ns(host.path, "ip", "-j", "-d", "link", "show", "type", "veth").stdout)
    veths = {link["ifname"] for link in links if link.get("ifalias", "").startswith("netd:")}
    want = {ep["host_ifname"] for ep in state["endpoints"].values() if ep["host_ifname"]}
    if veths != want:
        bad.append(f"netd veths {sorted(veths)} != the state's {sorted(want)} (orphans: {sorted(veths - want)})")
    files = set(os.listdir(host.netns_dir)) if host.netns_dir.exists() else set()
    mounts = {
        Path(line.split()[4]).name
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if Path(line.split()[4]).parent == host.netns_dir
    }
    names = set(state["netns"])
    if not names <= files or mounts - names or files - names:
        bad.append(f"netns files {sorted(files)} / mounts {sorted(mounts)} != the state's {sorted(names)}")
    for (net, ns), addr in eps.items():
        got = in_ns(host.ns(ns), "ip", "-j", "addr", "show", check=False)
        if got.returncode != 0:
            bad.append(f"netns {ns} cannot be entered: {got.stderr.strip()}")
            continue
        have = {f"{a['local']}/{a['prefixlen']}" for link in json.loads(got.stdout) for a in link["addr_info"]}
        if addr not in have:
            bad.append(f"endpoint {net}/{ns}: {addr} is not on any interface in the namespace ({sorted(have)})")
    return bad


def run_op(host: Host, model: Model, op: tuple[str, str, Any, list[Any]]) -> int | None:
    method, url, body, touched = op
    status = call(host, method, url, body)
    if url.endswith("/disconnect"):
        model.disconnect_answered(touched[0][1], status)
    else:
        model.answered(method, touched, status)
    return status


def test_kill9_at_random_moments_keeps_every_answered_change(tmp_path: Path) -> None:
    seed = int(os.environ.get("NETD_CHAOS_SEED", "11"))
    rng = random.Random(seed)
    model = Model()
    ops = kills = 0
    violations: list[str] = []
    modes: dict[str, int] = {}
    cut = {"done": 0, "not done": 0}  # requests cut by a kill: did the change happen?
    # each mode kills once, except the start-up modes (once idle or by the reboot, once during the start-up)
    plan = ["in_flight"] * 4 + ["netns_in_flight"] * 4 + ["startup"] * 3 + ["reboot_startup"] * 3
    rng.shuffle(plan)
    with running_host(tmp_path) as host:
        while plan:
            for _ in range(rng.randint(3, 8)):  # answered operations
                status = run_op(host, model, model.possible(rng))
                ops += 1
                if status is None or status >= 500:
                    violations.append(f"op {ops}: status {status} with no kill")
            mode = plan.pop()
            modes[mode] = modes.get(mode, 0) + 1
            if mode in ("in_flight", "netns_in_flight"):
                op = model.possible(rng, netns_only=mode == "netns_in_flight")
                t = threading.Thread(target=run_op, args=(host, model, op))
                t.start()
                time.sleep(rng.uniform(0, 0.06))
                host.stop(signal.SIGKILL)
                t.join(30)
                ops += 1
            else:
                if mode == "reboot_startup":
                    host.reboot()  # kill -9, and the kernel side is gone: the start-up replays everything
                else:
                    host.stop(signal.SIGKILL)
                host.start(wait=False)
                time.sleep(rng.uniform(0.05, 0.8))  # somewhere in start-up: config, state load, replay
                host.stop(signal.SIGKILL)
                kills += 1
            kills += 1
            host.start()
            for v in oracle(host, model, cut):
                violations.append(f"after kill {kills} ({mode}, seed {seed}): {v}")
        print(
            f"\nkill -9 chaos: seed {seed}, {ops} operations, {kills} kills {modes}, requests cut {cut}, "
            f"{len(violations)} violations"
        )
        for v in violations[:20]:
            print("  ", v)
        assert not violations, "\n".join(violations[:20])
