"""Issue 18: CNI ADD through the netd plugin next to the CNI bridge plugin and netavark; the docker CLI against
netd's Docker-API socket next to netd-ctl.

    .venv/bin/python bench/cni_add.py [--n 200] [--budget 120] [--reps 30] [--connects 50]

Each ADD is a process start, as a runtime does it: ``netd-cni`` (the plugin, stdlib Python, talking to a running
netd), ``/usr/lib/cni/bridge`` (+ host-local IPAM), ``netavark setup``.  Same N, same run, each tool in its own
throw-away namespaces.  Then ``docker network ls`` / ``docker network connect`` against ``[docker_api]`` and
``netd-ctl network ls`` / ``network connect`` against the API socket (process start included for both).
Writes bench/results/cni_add.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import peers
from common import (
    NETD_ENV,
    REPO,
    Host,
    bench_tag,
    leftovers,
    machine,
    netd_pid,
    pkg_version,
    summary,
    write_result,
)
from common import table as md_table
from compare import measure, render, run_peer
from peers import netns_batch, settle

NETD_CNI = str(REPO / ".venv" / "bin" / "netd-cni")
NETD_CTL = str(REPO / ".venv" / "bin" / "netd-ctl")
PREFIX = "ncx-"


class NetdCni:
    """netd through its CNI plugin: one ``netd-cni`` process per ADD/DEL, the runtime's netns path."""

    def __init__(self, host: Host, netns: list[str], plugin: str, name: str) -> None:
        self.name = name
        self.plugin = plugin
        self.host = host
        self.netns = netns
        self.pid = 0
        self.conf = json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "bench",
                "type": "netd",
                "network": "bench",
                "socket": str(host.run_dir / "netd.sock"),
            }
        )

    def prepare(self, n: int) -> None:
        self.host.boot()
        self.host.start(env=NETD_ENV)
        self.pid = netd_pid(self.host)
        self.host.api.ok("POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": peers.SUBNET}]}})

    def _call(self, cmd: str, i: int) -> None:
        if self.plugin == "in-process":  # the same API calls without the process start: where the time goes
            from netd.cli import client

            sock, path = str(self.host.run_dir / "netd.sock"), f"/run/netns/{self.netns[i]}"
            body = {"NetnsPath": path, "Interface": "eth0", "ContainerID": f"bench{i}"}
            if cmd == "ADD":
                client.call(sock, "POST", "/v1/networks/bench/connect", body)
            else:
                client.call(sock, "POST", "/v1/networks/bench/disconnect", {"ContainerID": f"bench{i}"})
            return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": cmd,
            "CNI_CONTAINERID": f"bench{i}",
            "CNI_NETNS": f"/run/netns/{self.netns[i]}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": "/nonexistent",
        }
        r = subprocess.run([self.plugin], input=self.conf, capture_output=True, text=True, env=env, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"netd-cni {cmd} {i} -> {r.returncode}: {r.stdout} {r.stderr}"[:2000])

    def attach(self, i: int) -> None:
        self._call("ADD", i)

    def detach(self, i: int) -> None:
        self._call("DEL", i)


def installed_launcher(tmp: Path) -> str:
    """The plugin as ``make install`` writes it (python -IS, no site), pointing at this checkout."""
    sys.path.insert(0, str(REPO / "tools"))
    from install import cni_launcher

    path = tmp / "netd-cni-installed"
    path.write_text(cni_launcher(str(REPO / ".venv" / "bin" / "python"), str(REPO)))
    path.chmod(0o755)
    return str(path)


def run_netd_cni(n: int, budget: float, tmp: Path, installed: bool, in_process: bool = False) -> dict[str, Any]:
    tag = secrets.token_hex(2)
    names = [f"{PREFIX}{tag}-{i}" for i in range(n)]
    host = Host(tmp / f"netd-cni-{tag}", tag=bench_tag())
    try:
        netns_batch("add", names)
        if installed:
            tool = NetdCni(host, names, installed_launcher(tmp), "netd CNI (installed, -IS)")
        elif in_process:
            tool = NetdCni(host, names, "in-process", "netd API, same calls, no process")
        else:
            tool = NetdCni(host, names, NETD_CNI, "netd CNI (.venv/bin/netd-cni)")
        return measure(tool, n, budget)
    except BaseException:
        print(host.log_text()[-3000:])
        raise
    finally:
        host.cleanup()
        netns_batch("del", names)


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    ms = (time.perf_counter() - t0) * 1000
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {r.returncode}: {r.stderr}"[:2000])
    return ms


def run_docker_vs_ctl(reps: int, connects: int, tmp: Path) -> dict[str, Any]:
    docker = shutil.which("docker")
    if docker is None:
        return {"skipped": "no docker CLI"}
    host = Host(tmp / f"netd-docker-{secrets.token_hex(2)}", tag=bench_tag())
    host.extra_config = f'[docker_api]\nlisten = "unix:{host.run_dir}/docker.sock"\n'
    denv = {
        **os.environ,
        "DOCKER_HOST": f"unix://{host.run_dir}/docker.sock",
        "DOCKER_CONFIG": str(tmp / "docker-config"),
    }
    ctl = [NETD_CTL, "--socket", str(host.run_dir / "netd.sock")]
    try:
        host.boot()
        host.start(env=NETD_ENV)
        for net, subnet in (("dk", "10.89.0.0/16"), ("ctl", "10.90.0.0/16")):
            host.api.ok("POST", "/v1/networks", {"Name": net, "IPAM": {"Config": [{"Subnet": subnet}]}})
        for i in range(connects):
            host.api.ok("POST", "/v1/netns", {"Name": f"e{i}"})
        _timed([docker, "network", "ls"], denv)  # warm the page cache for both binaries
        _timed([*ctl, "network", "ls"])
        out: dict[str, Any] = {
            "docker network ls": summary([_timed([docker, "network", "ls"], denv) for _ in range(reps)]),
            "netd-ctl network ls": summary([_timed([*ctl, "network", "ls"]) for _ in range(reps)]),
            "docker network connect": summary(
                [_timed([docker, "network", "connect", "dk", f"e{i}"], denv) for i in range(connects)]
            ),
            "netd-ctl network connect": summary(
                [_timed([*ctl, "network", "connect", "ctl", f"e{i}"]) for i in range(connects)]
            ),
        }
        return out
    except BaseException:
        print(host.log_text()[-3000:])
        raise
    finally:
        host.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--budget", type=float, default=120.0, help="seconds per phase (attach, detach) per tool")
    ap.add_argument("--reps", type=int, default=30, help="ls calls per client")
    ap.add_argument("--connects", type=int, default=50, help="connects per client")
    ap.add_argument("--tools", default="netd-cni-installed,netd-cni,netd-cni-api,cni,netavark")
    args = ap.parse_args()
    info = machine()
    info["versions"] = {p: pkg_version(p) for p in ("containernetworking-plugins", "netavark", "docker.io")}
    info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="netd-bench-") as d:
        tmp = Path(d)
        for name in args.tools.split(","):
            print(f"-- {name} N={args.n}", flush=True)
            if name.startswith("netd-cni"):
                installed, in_process = name == "netd-cni-installed", name == "netd-cni-api"
                r = run_netd_cni(args.n, args.budget, tmp, installed, in_process)
            else:
                r = run_peer(name, args.n, args.budget, tmp)
            results.append(r)
            print(render([r]).splitlines()[-1], flush=True)
            settle()
        print("-- docker CLI vs netd-ctl", flush=True)
        clients = run_docker_vs_ctl(args.reps, args.connects, tmp)
        launcher = installed_launcher(tmp)
        for label, cmd in (("netd CNI VERSION (installed, -IS)", launcher), ("netd CNI VERSION (venv)", NETD_CNI)):
            env = {"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "/usr/bin")}
            clients[label] = summary([_timed([cmd], env) for _ in range(args.reps)])
    table = render(results)
    rows = [
        [k, str(v["count"]), str(v["p50"]), str(v["p95"]), str(v["max"])]
        for k, v in clients.items()
        if k != "skipped"
    ]
    ctable = md_table(rows, ["client command", "calls", "p50 ms", "p95 ms", "max ms"])
    doc = {
        "machine": info,
        "n": args.n,
        "results": results,
        "clients": clients,
        "table": table,
        "clients_table": ctable,
    }
    print(f"wrote {write_result('cni_add', doc)}")
    print("\n" + table + "\n\n" + ctable)
    left = leftovers([PREFIX, "nbx-", "ndt-h-bn", "ndt-o-bn"])
    if left:
        print(f"WARNING: namespaces left behind: {left}")


if __name__ == "__main__":
    main()
