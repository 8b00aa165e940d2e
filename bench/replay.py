"""Cold replay (reboot simulation): netd rebuilding M networks x E endpoints from its state file, against the
`ip -batch` floor doing the same kernel work (namespaces, bridges with addresses, veths, addresses, routes,
masquerade rules) from a script.  Used by compare.py."""

from __future__ import annotations

import secrets
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from common import NETD_ENV, Host, bench_tag, netd_pid, rss_mib
from common import table as md_table
from netdtest import in_ns
from peers import inside, netns_batch
from peers import run as sh

PREFIX = "nbr-"


def subnet(i: int) -> tuple[str, str]:
    """Network i's /24 and its gateway."""
    base = f"10.{140 + i // 250}.{i % 250}"
    return f"{base}.0/24", f"{base}.1"


def _spread(networks: int, endpoints: int) -> list[tuple[int, int]]:
    """(network, index-in-network) for every endpoint, round-robin over the networks."""
    return [(k % networks, k // networks) for k in range(endpoints)]


def netd_replay(tmp: Path, networks: int, endpoints: int, budget: float, runs: int = 2) -> dict[str, Any]:
    host = Host(tmp / "replay-netd", tag=bench_tag())
    try:
        host.boot()
        host.start(env=NETD_ENV)
        api = host.api
        for i in range(networks):
            api.ok("POST", "/v1/networks", {"Name": f"n{i}", "IPAM": {"Config": [{"Subnet": subnet(i)[0]}]}})
        t0 = time.monotonic()
        built = 0
        for net, j in _spread(networks, endpoints):
            if time.monotonic() - t0 > budget:
                break
            api.ok("POST", "/v1/netns", {"Name": f"n{net}e{j}"})
            api.ok("POST", f"/v1/networks/n{net}/connect", {"Netns": f"n{net}e{j}"})
            built += 1
        build_s = time.monotonic() - t0
        walls: list[float] = []
        reconcile_ms: list[float] = []
        rss: list[float] = []
        for _ in range(runs):
            host.reboot()
            t1 = time.perf_counter()
            host.start(wait=False, env=NETD_ENV)
            host.wait_ready(timeout=600)  # the API socket opens once the start-up reconcile is done
            walls.append((time.perf_counter() - t1) * 1000)
            st = api.ok("GET", "/v1/status")
            assert st["endpoints"] == built and st["reconcile"]["in_sync"], st
            reconcile_ms.append(st["reconcile"]["last_ms"])
            rss.append(rss_mib(netd_pid(host)))
            veths = in_ns(host.path, "ip", "-o", "link", "show", "type", "veth").stdout.count(" master ")
            assert veths == built, f"{veths} veths after replay, want {built}"
        return {
            "tool": "netd",
            "networks": networks,
            "endpoints": built,
            "asked_endpoints": endpoints,
            "build_via_api_s": round(build_s, 1),
            "wall_ms": [round(w) for w in walls],
            "wall_ms_median": round(statistics.median(walls)),
            "startup_reconcile_ms": reconcile_ms,
            "rss_mib_after_replay": rss,
        }
    except BaseException:
        print(host.log_text()[-3000:])
        raise
    finally:
        host.cleanup()


def floor_replay(networks: int, endpoints: int, runs: int = 2) -> dict[str, Any]:
    walls: list[float] = []
    parts: dict[str, list[float]] = {"netns": [], "host": [], "nft": [], "inside": []}
    for _ in range(runs):
        tag = secrets.token_hex(2)
        outer = f"{PREFIX}o-{tag}"
        names = {(n, j): f"{PREFIX}{tag}-{n}-{j}" for n, j in _spread(networks, endpoints)}
        subprocess.run(["ip", "netns", "add", outer], check=True)
        try:
            with inside(f"/run/netns/{outer}"):
                host = ["link set lo up"]
                for i in range(networks):
                    sub, gw = subnet(i)
                    host += [f"link add rb{i} type bridge", f"addr add {gw}/24 dev rb{i}", f"link set rb{i} up"]
                for (n, j), ns in names.items():
                    host += [
                        f"link add rv{n}x{j} type veth peer name eth0 netns {ns}",
                        f"link set rv{n}x{j} master rb{n} up",
                    ]
                rules = "table ip floor {\n chain post { type nat hook postrouting priority 100;\n"
                rules += "".join(
                    f'  ip saddr {subnet(i)[0]} oifname != "rb{i}" masquerade\n' for i in range(networks)
                )
                rules += " }\n chain forward_ { type filter hook forward priority 0;\n"
                rules += "  ct state established,related accept\n"
                rules += "".join(f'  iifname "rb{i}" accept\n' for i in range(networks)) + " }\n}\n"
                t0 = time.perf_counter()
                netns_batch("add", list(names.values()))
                t1 = time.perf_counter()
                sh(["ip", "-batch", "-"], "\n".join(host) + "\n")
                t2 = time.perf_counter()
                sh(["nft", "-f", "-"], rules)
                t3 = time.perf_counter()
                for (n, j), ns in names.items():
                    sub, gw = subnet(n)
                    ip = sub.rsplit(".", 1)[0] + f".{j + 2}"
                    sh(
                        ["ip", "-n", ns, "-batch", "-"],
                        f"link set lo up\naddr add {ip}/24 dev eth0\nlink set eth0 up\n"
                        f"route add default via {gw}\n",
                    )
                t4 = time.perf_counter()
            walls.append((t4 - t0) * 1000)
            for k, (a, b) in {"netns": (t0, t1), "host": (t1, t2), "nft": (t2, t3), "inside": (t3, t4)}.items():
                parts[k].append(round((b - a) * 1000))
        finally:
            netns_batch("del", list(names.values()))
            subprocess.run(["ip", "netns", "del", outer], check=False)
            time.sleep(2)
    return {
        "tool": "ip-batch (floor)",
        "networks": networks,
        "endpoints": endpoints,
        "wall_ms": [round(w) for w in walls],
        "wall_ms_median": round(statistics.median(walls)),
        "parts_ms": parts,
    }


def measure(tmp: Path, networks: int, endpoints: int, budget: float) -> dict[str, Any]:
    print(f"-- replay: netd {networks} networks x {endpoints} endpoints (build budget {budget} s)", flush=True)
    nd = netd_replay(tmp, networks, endpoints, budget)
    time.sleep(2)
    print(f"-- replay: floor, {nd['networks']} networks x {nd['endpoints']} endpoints", flush=True)
    fl = floor_replay(nd["networks"], nd["endpoints"])
    return {"netd": nd, "floor": fl, "netd_over_floor": round(nd["wall_ms_median"] / fl["wall_ms_median"], 2)}


def render(rep: dict[str, Any]) -> str:
    nd, fl = rep["netd"], rep["floor"]
    note = "" if nd["endpoints"] == nd["asked_endpoints"] else f" (of {nd['asked_endpoints']} asked: build budget)"
    rows = [
        [
            "netd (kill -9, host netns + /run lost, start -> API up)",
            f"{nd['networks']} x {nd['endpoints']}{note}",
            f"{nd['wall_ms_median']} (runs {nd['wall_ms']}; start-up reconcile {nd['startup_reconcile_ms']})",
            f"RSS {nd['rss_mib_after_replay']} MiB",
        ],
        [
            "ip -batch floor (netns add, host batch, nft -f, ip -n batch per netns)",
            f"{fl['networks']} x {fl['endpoints']}",
            f"{fl['wall_ms_median']} (runs {fl['wall_ms']})",
            f"parts {fl['parts_ms']}",
        ],
    ]
    return md_table(rows, ["cold replay", "networks x endpoints", "wall ms (median)", "notes"]) + (
        f"\n\nnetd / floor = {rep['netd_over_floor']}x"
    )
