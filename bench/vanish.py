"""Issue 14: how long a deleted endpoint namespace stays on netd's books (endpoint, veth, address).

    .venv/bin/python bench/vanish.py [--sizes 50,200,1000] [--kills 10] [--rev REV]

N "container" namespaces, each held by a process (``unshare --net sleep``) and connected by ``NetnsPath``, as a
container runtime passes them.  Then, one at a time, a process is killed (and reaped, as a runtime does) and the
clock runs until the host side of its veth is gone from netd's namespace *and* netd's state has one endpoint
less (the address is free once the endpoint is forgotten: IPAM holds the state's addresses).  The full-pass timer
is 120 s (``NETD_ENV``), so a time under that is the event path.  Also a named mount (``ip netns add``, connected
by path) removed by hand, ``--kills`` times.  Writes bench/results/vanish.json.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import NETD_ENV, Host, bench_tag, machine, summary, table, use_revision, write_result

CLONE_NEWNET = 0x40000000
DEADLINE = 150.0  # past the 120 s full pass: a stuck endpoint shows up as ~120 s, not as a hang


class LinkWatch:
    """Answers "does this link exist in netd's namespace" from a thread that setns()ed there (no process per
    poll)."""

    def __init__(self, ns_path: str) -> None:
        self.ns_path = ns_path
        self._ask: list[tuple[str, threading.Event, list[bool]]] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self.ns_path, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)
        import socket

        while True:
            with self._cv:
                while not self._ask:
                    self._cv.wait()
                name, done, out = self._ask.pop()
            try:
                socket.if_nametoindex(name)
                out.append(True)
            except OSError:
                out.append(False)
            done.set()

    def exists(self, name: str) -> bool:
        done, out = threading.Event(), []  # type: ignore[var-annotated]
        with self._cv:
            self._ask.append((name, done, out))
            self._cv.notify()
        done.wait()
        return bool(out[0])


def _held_netns() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(["unshare", "--net", "sleep", "3600"])
    path = f"/proc/{proc.pid}/ns/net"
    own = os.stat("/proc/self/ns/net").st_ino
    while os.stat(path).st_ino == own:
        time.sleep(0.005)
    return proc, path


def _wait_cleaned(host: Host, watch: LinkWatch, ifname: str, endpoints_before: int, t0: float) -> float:
    link_gone = state_gone = False
    while time.perf_counter() - t0 < DEADLINE:
        link_gone = link_gone or not watch.exists(ifname)
        if link_gone and not state_gone:
            state_gone = host.api.ok("GET", "/v1/status")["endpoints"] < endpoints_before
        if link_gone and state_gone:
            return (time.perf_counter() - t0) * 1000
        time.sleep(0.01)
    return DEADLINE * 1000


def run(tmp: Path, n: int, kills: int, env: dict[str, str]) -> dict[str, Any]:
    host = Host(tmp / f"vanish{n}", tag=bench_tag())
    procs: list[subprocess.Popen[bytes]] = []
    named: list[str] = []
    try:
        host.boot()
        host.start(env={**NETD_ENV, **env})
        host.api.ok("POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": "10.130.0.0/16"}]}})
        watch = LinkWatch(host.path)
        eps = []
        for _ in range(n):
            proc, path = _held_netns()
            procs.append(proc)
            eps.append((proc, host.api.ok("POST", "/v1/networks/bench/connect", {"NetnsPath": path})))
        process_ms = []
        for proc, ep in eps[:kills]:
            before = host.api.ok("GET", "/v1/status")["endpoints"]
            t0 = time.perf_counter()
            proc.kill()
            proc.wait()
            process_ms.append(_wait_cleaned(host, watch, str(ep["HostInterface"]), before, t0))
        mount_ms = []
        for i in range(kills):
            name = f"ndt-c-{host.tag}-v{i}"
            subprocess.run(["ip", "netns", "add", name], check=True)
            named.append(name)
            ep = host.api.ok("POST", "/v1/networks/bench/connect", {"NetnsPath": f"/run/netns/{name}"})
            before = host.api.ok("GET", "/v1/status")["endpoints"]
            t0 = time.perf_counter()
            subprocess.run(["ip", "netns", "del", name], check=True)
            mount_ms.append(_wait_cleaned(host, watch, str(ep["HostInterface"]), before, t0))
        failed = host.log_text().count('"action_failed"')
        return {
            "endpoints": n,
            "process_exit_ms": summary(process_ms),
            "mount_removed_ms": summary(mount_ms),
            "action_failed_logged": failed,
        }
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for name in named:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        host.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="50,200,1000")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--rev")
    args = ap.parse_args()
    out: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="netd-vanish-") as d:
        env = use_revision(args.rev, Path(d))
        for n in [int(s) for s in args.sizes.split(",")]:
            out["runs"].append(run(Path(d), n, args.kills, env))
            print(f"N={n} done, load {os.getloadavg()}", flush=True)
    out["load_after"] = os.getloadavg()
    rows = [
        [
            str(r["endpoints"]),
            f"{r['process_exit_ms']['p50']} / {r['process_exit_ms']['max']}",
            f"{r['mount_removed_ms']['p50']} / {r['mount_removed_ms']['max']}",
            str(r["action_failed_logged"]),
        ]
        for r in out["runs"]
    ]
    hdr = ["N", "process exits: p50 / max ms", "mount removed: p50 / max ms", "action_failed"]
    print(table(rows, hdr))
    print(f"load {out['load_before']} -> {out['load_after']}; rev {args.rev or 'working tree'}")
    write_result("vanish", out)


if __name__ == "__main__":
    main()
