"""DNS resolver throughput and latency from one endpoint (issue 4's numbers).

Runs a real netd inside a throw-away host namespace (tests/integration/netdtest.py), a fake upstream resolver
(tests/integration/dnsfake.py) in its "outside" namespace, and the load client (tests/integration/dnsload.py)
inside one endpoint namespace.  Measures, for names netd answers itself and for names it forwards upstream:
sequential latency (one query in flight: p50/p99) and throughput with 64 in flight (queries/s, p99).  For
scale, the same client against the fake upstream directly from the host namespace (no netd in the path).

    sudo .venv/bin/python bench/dns_qps.py [--seconds 5] [--sequential 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import NETD_ENV, REPO, Host, cpu_s, machine, netd_pid, pct, table, write_result

TESTS = REPO / "tests" / "integration"
GW = "172.31.1.1"


def _load(ns: str, server: str, names: list[str], **kw: object) -> dict[str, Any]:
    opts = [x for k, v in kw.items() for x in (f"--{k}", str(v))]
    cmd = ["nsenter", f"--net={ns}", sys.executable, str(TESTS / "dnsload.py"), server, "--names", ",".join(names)]
    out = subprocess.run([*cmd, *opts], check=True, capture_output=True, text=True, timeout=600).stdout
    r: dict[str, Any] = json.loads(out)
    lat = r.pop("latencies_ms")
    r.pop("answers")
    r["qps"] = round(r["answered"] / r["elapsed_s"], 1) if r["elapsed_s"] else None
    r["p50_ms"] = round(pct(lat, 50), 3) if lat else None
    r["p99_ms"] = round(pct(lat, 99), 3) if lat else None
    return r


def run(seconds: float, sequential: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="netd-bench-dns-") as tmp:
        cfg = f'etc_netns_dir = "{tmp}/etc-netns"\ndns = ["10.255.0.2"]'
        host = Host(Path(tmp), config=cfg)
        upstream: subprocess.Popen[str] | None = None
        try:
            host.boot()
            host.start(env=NETD_ENV)
            fake = [sys.executable, str(TESTS / "dnsfake.py"), host.outside_ip, "53"]
            upstream = subprocess.Popen(
                ["nsenter", f"--net={host.outside_path}", *fake],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert upstream.stdout is not None and upstream.stdout.readline().strip() == "ready"
            host.api.ok(
                "POST", "/v1/networks", {"Name": "bench", "IPAM": {"Config": [{"Subnet": "172.31.1.0/24"}]}}
            )
            for ns, aliases in (("client", []), ("server", ["www"])):
                host.api.ok("POST", "/v1/netns", {"Name": ns})
                body = {"Netns": ns, "EndpointConfig": {"Aliases": aliases}}
                host.api.ok("POST", "/v1/networks/bench/connect", body)
            pid = netd_pid(host)
            client = host.ns("client")
            local = ["server", "www"]
            external = ["a.example.test", "bb.example.test"]
            out: dict[str, Any] = {}
            cpu0 = cpu_s(pid)
            out["local_sequential"] = _load(client, GW, local, count=sequential, concurrency=1)
            out["local_64_inflight"] = _load(client, GW, local, seconds=seconds, concurrency=64)
            out["local_cpu_s"] = round(cpu_s(pid) - cpu0, 2)
            cpu0 = cpu_s(pid)
            out["forwarded_sequential"] = _load(client, GW, external, count=sequential, concurrency=1)
            out["forwarded_64_inflight"] = _load(client, GW, external, seconds=seconds, concurrency=64)
            out["forwarded_cpu_s"] = round(cpu_s(pid) - cpu0, 2)
            out["upstream_direct_64_inflight"] = _load(
                host.path, host.outside_ip, external, seconds=seconds, concurrency=64
            )
            return out
        finally:
            if upstream is not None:
                upstream.kill()
                upstream.wait(5)
            host.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    p.add_argument("--sequential", type=int, default=2000, help="queries in each one-at-a-time run")
    args = p.parse_args()
    info = machine()
    res = run(args.seconds, args.sequential)
    rows = [
        [k, v["sent"], v["answered"], v["lost"], v["qps"], v["p50_ms"], v["p99_ms"]]
        for k, v in res.items()
        if isinstance(v, dict)
    ]
    print(table(rows, ["run", "sent", "answered", "lost", "queries/s", "p50 ms", "p99 ms"]))
    print(f"netd CPU: local {res['local_cpu_s']} s, forwarded {res['forwarded_cpu_s']} s")
    path = write_result("dns_qps", {"machine": info, "args": vars(args), "results": res})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
