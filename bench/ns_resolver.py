"""What the resolver inside macvlan namespaces (issue 12.9: 127.0.0.11:53 opened by a setns thread per
namespace) costs: ``network connect`` latency of macvlan endpoints, the daemon's idle CPU with N namespaces
served (the watch stats one path per namespace each second), and the query latency through it.

    sudo .venv/bin/python bench/ns_resolver.py [--endpoints 200] [--rev REV]

Run it with ``--rev <commit before the change>`` and without, in one sitting, to compare (connect only: the
old revision has no resolver to query).
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import NETD_ENV, Host, bench_tag, cpu_s, machine, netd_pid, summary, use_revision, write_result
from netdtest import plug_into_segment, sh

QUERY = (
    "import socket,struct,sys,time\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)\n"
    "q=struct.pack('!HHHHHH',1,0x100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in sys.argv[1].split('.'))"
    "+b'\\0'+struct.pack('!HH',1,1)\n"
    "out=[]\n"
    "for i in range(int(sys.argv[2])):\n"
    "  t=time.perf_counter();s.sendto(q,('127.0.0.11',53));s.recv(512);out.append((time.perf_counter()-t)*1000)\n"
    "print(' '.join(f'{x:.3f}' for x in out))\n"
)


def _stamp(line: str) -> float:
    return datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00")).timestamp()


def _replay_to_ready_ms(lines: list[str]) -> float:
    """From the end of the start-up reconcile to ``netd_ready`` (the state-change hooks: DNS listeners, the
    namespaces' resolvers, resolv.conf files), from the daemon's own log: less noisy than the wall time."""
    done = next(ln for ln in lines if '"reconcile_done"' in ln and '"start"' in ln)
    ready = next(ln for ln in lines if '"netd_ready"' in ln)
    return round((_stamp(ready) - _stamp(done)) * 1000, 1)


def measure(endpoints: int, tmp: Path, queries: bool) -> dict[str, Any]:
    host = Host(tmp / "ns-resolver", tag=bench_tag())
    seg = f"ndt-bs-{secrets.token_hex(3)}"
    try:
        host.boot()
        sh("ip", "netns", "add", seg)
        sh("ip", "-n", seg, "link", "add", "seg", "type", "bridge")
        sh("ip", "-n", seg, "link", "set", "seg", "up")
        plug_into_segment(host.name, seg)
        host.start(env=NETD_ENV)
        api = host.api
        api.ok(
            "POST",
            "/v1/networks",
            {
                "Name": "mv",
                "Driver": "macvlan",
                "IPAM": {"Config": [{"Subnet": "10.151.0.0/20", "Gateway": "10.151.0.1"}]},
                "Options": {"parent": "lan0"},
            },
        )
        connect_ms: list[float] = []
        for i in range(endpoints):
            api.ok("POST", "/v1/netns", {"Name": f"m{i}"})
            t0 = time.perf_counter()
            api.ok("POST", "/v1/networks/mv/connect", {"Netns": f"m{i}"})
            connect_ms.append((time.perf_counter() - t0) * 1000)
        opened = [
            float(line.split('"ms": ')[1].split(",")[0].rstrip("}"))
            for line in host.log_text().splitlines()
            if '"ns_resolver_listening"' in line
        ]
        pid = netd_pid(host)
        time.sleep(2)
        c0, t0 = cpu_s(pid), time.monotonic()
        time.sleep(10)
        idle_cpu_pct = round((cpu_s(pid) - c0) / (time.monotonic() - t0) * 100, 2)
        out: dict[str, Any] = {
            "endpoints": endpoints,
            "connect_ms": summary(connect_ms),
            "idle_cpu_percent": idle_cpu_pct,
            **({"open_ms": summary(opened)} if opened else {}),
        }
        host.stop()
        lines = len(host.log_text().splitlines())
        t0 = time.perf_counter()
        host.start(env=NETD_ENV)
        out["restart_to_ready_s"] = round(time.perf_counter() - t0, 2)
        out["replay_to_ready_ms"] = _replay_to_ready_ms(host.log_text().splitlines()[lines:])
        if queries:
            r = subprocess.run(
                ["nsenter", f"--net={host.ns('m0')}", "python3", "-c", QUERY, f"m{endpoints - 1}", "500"],
                capture_output=True,
                text=True,
                check=True,
            )
            out["query_ms"] = summary([float(x) for x in r.stdout.split()])
        return out
    except BaseException:
        print(host.log_text()[-3000:])
        raise
    finally:
        host.cleanup()
        sh("ip", "netns", "del", seg, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=200)
    ap.add_argument("--rev", help="measure netd as committed at this git revision (default: working tree)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="netd-bench-") as d:
        info: dict[str, Any] = {"machine": machine(), "netd": use_revision(args.rev, Path(d))}
        info |= measure(args.endpoints, Path(d), queries=args.rev is None)
    print(
        f"netd {info['netd']}  endpoints {info['endpoints']}  idle cpu {info['idle_cpu_percent']} %  "
        f"restart {info['restart_to_ready_s']} s (replay to ready {info['replay_to_ready_ms']} ms)"
    )
    for key in ("connect_ms", "open_ms", "query_ms"):
        if key in info:
            s = info[key]
            print(f"{key:12s} p50 {s['p50']:8.2f}  p95 {s['p95']:8.2f}  max {s['max']:8.2f}")
    print("wrote", write_result("ns_resolver" + (f"_{args.rev}" if args.rev else ""), info))


if __name__ == "__main__":
    main()
