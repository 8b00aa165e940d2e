"""Issue 14: the cost per endpoint of removing many at once.

    .venv/bin/python bench/batch_remove.py [--sizes 200,1000] [--singles 20] [--rev REV] [--revs main,HEAD]

N netd namespaces, each connected to one bridge network.  Timed through the API, per endpoint:
- ``netns rm`` one at a time (``DELETE /v1/netns/NAME``, ``--singles`` of them: the old way), then the remaining
  namespaces in one ``netns rm A B C ...`` (``DELETE /v1/netns {"Names": [...]}``);
- the same N again, then ``network rm --force`` (``DELETE /v1/networks/NAME?force=1``).
The kernel is read back after each batch (no veth of the network left).  ``--revs A,B``: each size for each
revision in turn, in one run (same-run comparison).  Writes bench/results/batch_remove.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import NETD_ENV, Host, bench_tag, machine, summary, table, use_revision, write_result
from netdtest import in_ns

NET = {"Name": "bench", "IPAM": {"Config": [{"Subnet": "10.132.0.0/16"}]}}


def _populate(host: Host, names: list[str]) -> None:
    host.api.ok("POST", "/v1/networks", NET)
    for name in names:
        host.api.ok("POST", "/v1/netns", {"Name": name})
        host.api.ok("POST", "/v1/networks/bench/connect", {"Netns": name})


def _veths(host: Host) -> int:
    return in_ns(host.path, "ip", "-o", "link", "show", "type", "veth").stdout.count("\n")


def run(tmp: Path, n: int, singles: int, env: dict[str, str], rev: str = "") -> dict[str, Any]:
    host = Host(tmp / f"batch{n}{rev}", tag=bench_tag())
    try:
        host.boot()
        host.start(env={**NETD_ENV, **env})
        names = [f"b{i}" for i in range(n)]
        base = _veths(host)  # the harness's own uplink
        _populate(host, names)
        single_ms = []
        for name in names[:singles]:
            t0 = time.perf_counter()
            host.api.ok("DELETE", f"/v1/netns/{name}")
            single_ms.append((time.perf_counter() - t0) * 1000)
        rest = names[singles:]
        t0 = time.perf_counter()
        answer = host.api.ok("DELETE", "/v1/netns", {"Names": rest})
        netns_batch_ms = (time.perf_counter() - t0) * 1000
        assert answer["Errors"] == {} and len(answer["Removed"]) == len(rest), answer
        assert _veths(host) == base
        host.api.ok("DELETE", "/v1/networks/bench")
        _populate(host, names)
        t0 = time.perf_counter()
        host.api.ok("DELETE", "/v1/networks/bench?force=1")
        force_ms = (time.perf_counter() - t0) * 1000
        assert _veths(host) == base
        return {
            "rev": rev or "-",
            "endpoints": n,
            "netns_rm_single_ms": summary(single_ms),
            "netns_rm_batch_total_ms": round(netns_batch_ms, 1),
            "netns_rm_batch_per_endpoint_ms": round(netns_batch_ms / len(rest), 2),
            "network_rm_force_total_ms": round(force_ms, 1),
            "network_rm_force_per_endpoint_ms": round(force_ms / n, 2),
        }
    finally:
        host.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="200,1000")
    ap.add_argument("--singles", type=int, default=20)
    ap.add_argument("--rev")
    ap.add_argument("--revs", help="several revisions, compared in one run (overrides --rev)")
    args = ap.parse_args()
    out: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="netd-batchrm-") as d:
        envs: dict[str, dict[str, str]] = {}
        if args.revs:
            for rev in args.revs.split(","):
                where = Path(d) / f"src-{len(envs)}"
                out.setdefault("netd", {})[rev] = use_revision(rev, where)
                envs[rev] = {"PYTHONPATH": os.environ.pop("PYTHONPATH", "")}  # per run, not process-wide
        else:
            envs[args.rev or ""] = use_revision(args.rev, Path(d))
        for n in [int(s) for s in args.sizes.split(",")]:
            for rev, env in envs.items():
                out["runs"].append(run(Path(d), n, args.singles, env, rev))
                print(f"N={n} {rev} done, load {os.getloadavg()}", flush=True)
    out["load_after"] = os.getloadavg()
    rows = [
        [
            r["rev"],
            str(r["endpoints"]),
            str(r["netns_rm_single_ms"]["p50"]),
            f"{r['netns_rm_batch_per_endpoint_ms']} ({r['netns_rm_batch_total_ms']} ms)",
            f"{r['network_rm_force_per_endpoint_ms']} ({r['network_rm_force_total_ms']} ms)",
        ]
        for r in out["runs"]
    ]
    hdr = ["rev", "N", "netns rm one at a time p50 ms", "netns rm batch ms/endpoint", "network rm --force ms/ep"]
    print(table(rows, hdr))
    print(f"load {out['load_before']} -> {out['load_after']}; rev {args.revs or args.rev or 'working tree'}")
    write_result("batch_remove", out)


if __name__ == "__main__":
    main()
