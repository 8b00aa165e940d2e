"""`make demo`: netd working end to end, inside throw-away namespaces (never the machine's own network).

A "host" namespace with an uplink to an "outside" namespace stands in for a machine; netd runs inside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "tests" / "integration"
sys.path.insert(0, str(INTEGRATION))

from netdtest import Host, in_ns, running_host, source_seen_outside  # noqa: E402

ECHO = str(INTEGRATION / "portecho.py")


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


def link_names(path: str) -> list[str]:
    return [link["ifname"] for link in json.loads(in_ns(path, "ip", "-j", "link").stdout)]


def check_name(host: Host) -> bool:
    """What the Docker guide shows first: a name resolving, here db and the alias www from web."""
    resolv = host.root / "etc-netns" / "web" / "resolv.conf"
    print(f"netd wrote {resolv} (ip netns exec web ... reads it as /etc/resolv.conf):", flush=True)
    print(resolv.read_text().rstrip(), flush=True)
    server = next(line.split()[1] for line in resolv.read_text().splitlines() if line.startswith("nameserver"))
    ok = True
    for name, want in (("db", "172.30.0.20"), ("www", None)):
        print(f"[web]$ dig +short @{server} {name}", flush=True)
        got = in_ns(host.ns("web"), "dig", "+short", "+time=2", "+tries=2", f"@{server}", name, check=False)
        print(got.stdout.rstrip() or "(no answer)", flush=True)
        ok = ok and bool(got.stdout.strip()) and (want is None or got.stdout.split()[0] == want)
    return ok


@contextmanager
def web_server(host: Host) -> Iterator[None]:
    """A TCP/UDP echo service on port 80 inside web (the "container" behind the published port)."""
    argv = ["nsenter", f"--net={host.ns('web')}", sys.executable, ECHO, "serve", "web", "80"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        yield
    finally:
        proc.kill()
        proc.wait(5)


def check_port(host: Host) -> bool:
    """The published port answering from outside the machine: outside -> host:8080 -> web:80."""
    with web_server(host):
        cmd = [sys.executable, ECHO, "send", "tcp", host.uplink_ip, "8080"]
        print(f'[outside]$ portecho.py send tcp {host.uplink_ip} 8080   # sends "hello"', flush=True)
        for _ in range(3):
            r = in_ns(host.outside_path, *cmd, check=False)
            if r.returncode == 0:
                break
            time.sleep(0.2)
        print((r.stdout.strip() or "(no answer)") + "   <- web:80 answered, as <service>:<port>:<peer>:<msg>")
        return r.returncode == 0 and r.stdout.startswith("web:80:")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="netd-demo-") as tmp, running_host(Path(tmp), start=False) as host:
        step(f"start netd inside the test host namespace {host.name} (state in {host.state_dir})")
        host.start()
        ctl(host, "status")
        step("a user-defined bridge network and two namespaces")
        ctl(host, "network", "create", "--subnet", "172.30.0.0/24", "--gateway", "172.30.0.1", "demo-net")
        ctl(host, "netns", "create", "web")
        ctl(host, "netns", "create", "db")
        ctl(host, "network", "connect", "--alias", "www", "-p", "8080:80", "demo-net", "web")
        ctl(host, "network", "connect", "--ip", "172.30.0.20", "demo-net", "db")
        ctl(host, "network", "ls")
        ctl(host, "network", "inspect", "demo-net")
        step("traffic: web -> db on the bridge, web -> outside through NAT")
        ok1 = check_traffic(host, "172.30.0.20")
        step("names: web finds db (and the alias www) through the network's resolver, as in Docker")
        ok1 = check_name(host) and ok1
        step("a published port (-p 8080:80) answering from outside the machine")
        ok1 = check_port(host) and ok1
        step("reboot simulation: kill -9 netd, delete the host namespace and everything in it, start again")
        host.reboot()
        print(f"host namespace recreated empty; links now: {link_names(host.path)}", flush=True)
        t0 = time.monotonic()
        host.start()
        print(f"netd replayed its state in {time.monotonic() - t0:.2f}s", flush=True)
        ctl(host, "status")
        ok2 = check_traffic(host, "172.30.0.20") and check_name(host) and check_port(host)
        step("result")
        print("before reboot: " + ("OK" if ok1 else "FAILED"))
        print("after reboot:  " + ("OK" if ok2 else "FAILED"))
        step("clean up: everything the demo made is removed")
        return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
