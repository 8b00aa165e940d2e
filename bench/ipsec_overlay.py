"""What encryption costs: TCP throughput and ping latency between two endpoints on different simulated nodes,
plain VXLAN vs ESP-encrypted VXLAN vs a plain bridge, in one run.  Needs ESP, so it runs in the VM:

    ../shared/vmtest/run-in-vm -t 900 --modules aesni_intel -- .venv/bin/python bench/ipsec_overlay.py \
        [--seconds 5] [--pings 100] [--netd]

``--netd``: the same three cases made by netd itself, as users make them: two simulated hosts each running its
own netd with an etcd on the underlay (tests/integration/overlay/mhtest.py); a plain overlay and an encrypted one
(``--opt encrypted``) between an endpoint on node 1 and one on node 2, and a bridge network with two endpoints on
node 1.  Results: bench/results/ipsec_overlay_netd.json.

Topology: tests/vm/esplab.py (two node namespaces on one underlay bridge; the encrypted VXLAN, VNI 4097, is
programmed with netd.kernel.xfrm exactly as in tests/vm/test_xfrm.py; the bridge pair hangs off the underlay
bridge directly).  Throughput: iperf3 (Debian's package; `make vm-deps` installs it), one TCP stream.  Under TCG
emulation absolute numbers are far below real hardware and AES-GCM is emulated too: read the ratios, and rerun
on real hardware for absolute figures.  Without ``--modules aesni_intel`` the guest
uses aes-generic (the driver is printed).  Results: bench/results/ipsec_overlay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests" / "integration"))
sys.path.insert(0, str(BENCH.parent / "tests" / "vm"))
sys.path.insert(0, str(BENCH.parent / "tests" / "integration" / "overlay"))

from esplab import ENC_VNI, Lab  # noqa: E402

from netd.core.ipsecspec import new_ring  # noqa: E402
from netd.kernel.xfrm import probe_esp  # noqa: E402

CASES = {"bridge": ("b", "10.93.0.2"), "vxlan": ("p", "10.92.0.2"), "vxlan+esp": ("e", "10.91.0.2")}


def ns_cmd(path: str, *cmd: str) -> list[str]:
    return ["nsenter", f"--net={path}", *cmd]


def throughput(src: str, dst: str, addr: str, seconds: int) -> float:
    """One TCP stream for ``seconds``, Mbit/s received; a failed attempt (server not up yet, a control
    connection lost on a loaded machine) is retried with a fresh one-off server."""
    why = ""
    for _ in range(5):
        server = subprocess.Popen(ns_cmd(dst, "iperf3", "-s", "-1", "-B", addr),
                                  stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(1)
            r = subprocess.run(ns_cmd(src, "iperf3", "-c", addr, "-t", str(seconds), "-J"),
                               capture_output=True, text=True)  # fmt: skip
            try:
                doc = json.loads(r.stdout)
                return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e6
            except (ValueError, KeyError):
                why = (r.stdout + r.stderr)[-300:]
        finally:
            server.kill()
            server.wait()
    raise RuntimeError(f"iperf3 to {addr} failed 5 times: {why}")


def latency(src: str, addr: str, count: int) -> dict[str, float]:
    r = subprocess.run(ns_cmd(src, "ping", "-n", "-q", "-i", "0.02", "-c", str(count), addr),
                       capture_output=True, text=True, check=True)  # fmt: skip
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", r.stdout)
    lost = re.search(r"(\d+)% packet loss", r.stdout)
    assert m and lost, r.stdout
    return {"min_ms": float(m[1]), "avg_ms": float(m[2]), "max_ms": float(m[3]), "loss_pct": float(lost[1])}


def aead_driver() -> str:
    """The kernel's implementation of rfc4106(gcm(aes)) (AES-NI or generic C): it decides the ESP cost."""
    text = Path("/proc/crypto").read_text()
    for block in text.split("\n\n"):
        if re.search(r"^name\s*: rfc4106\(gcm\(aes\)\)$", block, re.M):
            m = re.search(r"^driver\s*: (\S+)", block, re.M)
            if m:
                return m[1]
    return "unknown"


def measure(cases: dict[str, tuple[str, str, str]], seconds: int, pings: int) -> dict[str, dict[str, float]]:
    """``cases``: name -> (client netns path, server netns path, server address)."""
    results: dict[str, dict[str, float]] = {}
    for name, (src, dst, addr) in cases.items():
        subprocess.run(ns_cmd(src, "ping", "-c", "2", "-w", "30", addr), capture_output=True)
        results[name] = {"tcp_mbit_s": round(throughput(src, dst, addr, seconds), 1)}
        results[name].update(latency(src, addr, pings))
    return results


def with_netd(seconds: int, pings: int) -> dict[str, dict[str, float]]:
    """The three cases as netd makes them: two nodes, each with its own netd, etcd on the underlay."""
    import tempfile

    from mhtest import addr, cluster, until
    from vmnodes import SlowNode  # tests/vm: etcd and netd-ctl timeouts for the emulated CPU

    with tempfile.TemporaryDirectory(prefix="netd-bench-") as tmp, cluster(Path(tmp), 0) as c:
        nodes = []
        for i in (1, 2):
            node = SlowNode(c.tmp, c.seg, i, c.etcd.endpoints, ttl=10)
            c.nodes.append(node)
            node.boot()
            node.start(wait=False)
            nodes.append(node)
        for node in nodes:
            node.wait_ready(300)
        n1, n2 = nodes
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.92.0.0/24", "plain")
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "--opt", "encrypted", "--subnet",
               "10.91.0.0/24", "sec")  # fmt: skip
        n1.ctl("network", "create", "--subnet", "10.93.0.0/24", "br")
        assert until(lambda: "sec" in n2.ctl("network", "ls").stdout, 120)
        ips = {
            "plain": addr(n2.connect("plain", "p2")),
            "sec": addr(n2.connect("sec", "e2")),
            "br": addr(n1.connect("br", "b2")),
        }
        n1.connect("plain", "p1")
        n1.connect("sec", "e1")
        n1.connect("br", "b1")
        return measure(
            {
                "bridge": (n1.ns("b1"), n1.ns("b2"), ips["br"]),
                "vxlan": (n1.ns("p1"), n2.ns("p2"), ips["plain"]),
                "vxlan+esp": (n1.ns("e1"), n2.ns("e2"), ips["sec"]),
            },
            seconds,
            pings,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--pings", type=int, default=100)
    ap.add_argument("--netd", action="store_true", help="networks made by netd daemons (see the docstring)")
    args = ap.parse_args()
    if not shutil.which("iperf3"):
        sys.exit("iperf3 is missing: apt-get install iperf3 (make vm-deps)")
    asyncio.run(probe_esp())
    if args.netd:
        report(with_netd(args.seconds, args.pings), args, "ipsec_overlay_netd.json")
        return
    lab = Lab()
    try:
        lab.build()
        lab.bridge_pair()
        ring = new_ring(ENC_VNI)
        for i in lab.nodes:
            lab.mark_vni(i, ENC_VNI)
            lab.converge(i, lab.desired(ring, i))
        cases = {name: (lab.path(kind, 1), lab.path(kind, 2), addr) for name, (kind, addr) in CASES.items()}
        results = measure(cases, args.seconds, args.pings)
    finally:
        lab.cleanup()
    report(results, args, "ipsec_overlay.json")


def report(results: dict[str, dict[str, float]], args: argparse.Namespace, file: str) -> None:
    base, plain = results["bridge"], results["vxlan"]
    ratios = {
        f"{name}/{ref}": {
            "throughput": round(r["tcp_mbit_s"] / b["tcp_mbit_s"], 3),
            "latency_avg": round(r["avg_ms"] / b["avg_ms"], 3),
        }
        for name, r in results.items()
        for ref, b in (("bridge", base), ("vxlan", plain))
        if name not in (ref, "bridge")
    }
    out = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": platform.release(),
        "in_vm": os.environ.get("VMTEST") == "1",
        "load": os.getloadavg(),
        "aead_driver": aead_driver(),
        "made_by": "netd daemons" if args.netd else "tests/vm/esplab.py",
        "seconds": args.seconds,
        "pings": args.pings,
        "results": results,
        "ratios": ratios,
    }
    print(f"{'case':<10} {'TCP Mbit/s':>11} {'ping avg ms':>12} {'min':>7} {'max':>7} {'loss %':>7}")
    for name, r in results.items():
        cols = (r["tcp_mbit_s"], r["avg_ms"], r["min_ms"], r["max_ms"], r["loss_pct"])
        print(f"{name:<10} {cols[0]:>11} {cols[1]:>12} {cols[2]:>7} {cols[3]:>7} {cols[4]:>7}")
    print(f"rfc4106(gcm(aes)) driver: {out['aead_driver']}, load {out['load']}")
    for k, v in ratios.items():
        print(f"{k:<18} throughput x{v['throughput']}  latency x{v['latency_avg']}")
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / file).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
