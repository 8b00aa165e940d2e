"""`make demo`: netd working end to end, inside throw-away namespaces (never the machine's own network).

A "host" namespace with an uplink to an "outside" namespace stands in for a machine; netd runs inside it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from netdtest import Host, in_ns, running_host, source_seen_outside


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def ctl(host: Host, *args: str) -> str:
    print("$ netd-ctl " + " ".join(args), flush=True)
    out = host.ctl(*args).stdout
    print(out.rstrip(), flush=True)
    return out


def run_in(path: str, label: str, *cmd: str) -> bool:
    print(f"[{label}]$ " + " ".join(cmd), flush=True)
    r = in_ns(path, *cmd, check=False)
    print((r.stdout + r.stderr).rstrip(), flush=True)
    return r.returncode == 0


def check_traffic(host: Host, db_ip: str) -> bool:
    ok = run_in(host.ns("web"), "web", "ping", "-c", "2", "-W", "1", db_ip)
    src = source_seen_outside(host, host.ns("web")) or "(nothing arrived)"
    print(
        f"outside {host.outside_ip} saw a TCP connection from {src} "
        f"(the host's uplink address {host.uplink_ip}: NAT works)",
        flush=True,
    )
    return ok and src == host.uplink_ip


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="netd-demo-") as tmp, running_host(Path(tmp), start=False) as host:
        step(f"start netd inside the test host namespace {host.name} (state in {host.state_dir})")
        host.start()
        ctl(host, "status")
        step("a user-defined bridge network and two namespaces")
        ctl(host, "network", "create", "--subnet", "172.30.0.0/24", "--gateway", "172.30.0.1", "demo-net")
        ctl(host, "netns", "create", "web")
        ctl(host, "netns", "create", "db")
        ctl(host, "network", "connect", "--alias", "www", "demo-net", "web")
        ctl(host, "network", "connect", "--ip", "172.30.0.20", "demo-net", "db")
        ctl(host, "network", "ls")
        ctl(host, "network", "inspect", "demo-net")
        step("traffic: web -> db on the bridge, web -> outside through NAT")
        ok1 = check_traffic(host, "172.30.0.20")
        step("reboot simulation: kill -9 netd, delete the host namespace and everything in it, start again")
        host.reboot()
        print(
            f"host namespace recreated empty; links now: "
            f"{in_ns(host.path, 'ip', '-br', 'link').stdout.split()[::3]}",
            flush=True,
        )
        t0 = time.monotonic()
        host.start()
        print(f"netd replayed its state in {time.monotonic() - t0:.2f}s", flush=True)
        ctl(host, "status")
        ok2 = check_traffic(host, "172.30.0.20")
        step("result")
        print("before reboot: " + ("OK" if ok1 else "FAILED"))
        print("after reboot:  " + ("OK" if ok2 else "FAILED"))
        step("clean up: everything the demo made is removed")
        return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
