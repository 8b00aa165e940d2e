"""Cold replay (reboot simulation): netd rebuilding M networks x E endpoints from its state file, against the
`ip -batch` floor doing the same kernel work (namespaces, bridges with addresses, veths, addresses, routes,
masquerade rules) from a script, and (issue 14) the one-process Python-netlink floor (bench/pyfloor.py) doing it
on raw rtnetlink.  Used by compare.py; on its own:

    .venv/bin/python bench/replay.py [--networks 50] [--endpoints 1000] [--budget 300] [--rev REV]
        [--floors pyfloor,ip-batch]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import tempfile
import time
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pyfloor
from common import NETD_ENV, Host, bench_tag, leftovers, machine, netd_pid, rss_mib, use_revision, write_result
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


def _floor_result(
    tool: str, networks: int, endpoints: int, walls: list[float], parts: dict[str, list[float]]
) -> dict[str, Any]:
    return {
        "tool": tool,
        "networks": networks,
        "endpoints": endpoints,
        "wall_ms": [round(w) for w in walls],
        "wall_ms_median": round(statistics.median(walls)),
        "parts_ms": parts,
    }


def _floor_rules(networks: int) -> str:
    """The floors' nft ruleset: masquerade out of each bridge's subnet, forwarding from each bridge."""
    rules = "table ip floor {\n chain post { type nat hook postrouting priority 100;\n"
    rules += "".join(f'  ip saddr {subnet(i)[0]} oifname != "rb{i}" masquerade\n' for i in range(networks))
    rules += " }\n chain forward_ { type filter hook forward priority 0;\n"
    rules += "  ct state established,related accept\n"
    return rules + "".join(f'  iifname "rb{i}" accept\n' for i in range(networks)) + " }\n}\n"


def pyfloor_replay(networks: int, endpoints: int, runs: int = 2) -> dict[str, Any]:
    """The same kernel work from one Python process on raw rtnetlink (bench/pyfloor.py): the namespaces made by
    one thread (unshare + bind mount each), the bridges, each endpoint as a connect does it (veth with the peer
    made in the namespace, one datagram inside: lo up, address, up, default route; the host side up), then the
    same ``nft -f`` as the ip-batch floor."""
    walls: list[float] = []
    parts: dict[str, list[float]] = {"netns": [], "links": [], "nft": []}
    for _ in range(runs):
        tag = secrets.token_hex(2)
        outer = f"{PREFIX}o-{tag}"
        names = {(n, j): f"{PREFIX}{tag}-{n}-{j}" for n, j in _spread(networks, endpoints)}
        subprocess.run(["ip", "netns", "add", outer], check=True)  # also makes /run/netns a shared mount
        made: list[str] = []
        try:
            with inside(f"/run/netns/{outer}"):
                rules = _floor_rules(networks)
                t0 = time.perf_counter()
                paths = [f"/run/netns/{ns}" for ns in names.values()]
                try:
                    pyfloor.make_netns(paths)
                finally:
                    made = [ns for ns in names.values() if Path(f"/run/netns/{ns}").exists()]
                t1 = time.perf_counter()
                host = pyfloor.Nl()
                try:
                    host.ask([pyfloor.set_up(1)])  # lo
                    bridges = []
                    for i in range(networks):
                        sub, gw = subnet(i)
                        bridges.append(pyfloor.bridge_up(host, f"rb{i}", IPv4Interface(f"{gw}/24")))
                    for (n, j), ns in names.items():
                        sub, gw = subnet(n)
                        iface = IPv4Interface(sub.rsplit(".", 1)[0] + f".{j + 2}/24")
                        pyfloor.connect(host, bridges[n], f"/run/netns/{ns}", f"rv{n}x{j}", iface, gw, lo=True)
                finally:
                    host.close()
                t2 = time.perf_counter()
                sh(["nft", "-f", "-"], rules)
                t3 = time.perf_counter()
            walls.append((t3 - t0) * 1000)
            for k, (a, b) in {"netns": (t0, t1), "links": (t1, t2), "nft": (t2, t3)}.items():
                parts[k].append(round((b - a) * 1000))
        finally:
            netns_batch("del", made)
            subprocess.run(["ip", "netns", "del", outer], check=False)
            time.sleep(2)
    return _floor_result("python-netlink (floor)", networks, endpoints, walls, parts)


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
                rules = _floor_rules(networks)
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
    return _floor_result("ip-batch (floor)", networks, endpoints, walls, parts)


def measure(
    tmp: Path, networks: int, endpoints: int, budget: float, floors: tuple[str, ...] = ("ip-batch", "pyfloor")
) -> dict[str, Any]:
    print(f"-- replay: netd {networks} networks x {endpoints} endpoints (build budget {budget} s)", flush=True)
    nd = netd_replay(tmp, networks, endpoints, budget)
    out: dict[str, Any] = {"netd": nd}
    for floor in floors:
        time.sleep(2)
        print(f"-- replay: {floor} floor, {nd['networks']} networks x {nd['endpoints']} endpoints", flush=True)
        if floor == "pyfloor":
            out["pyfloor"] = pyfloor_replay(nd["networks"], nd["endpoints"])
            out["netd_over_pyfloor"] = round(nd["wall_ms_median"] / out["pyfloor"]["wall_ms_median"], 2)
        else:
            out["floor"] = floor_replay(nd["networks"], nd["endpoints"])
            out["netd_over_floor"] = round(nd["wall_ms_median"] / out["floor"]["wall_ms_median"], 2)
    return out


def render(rep: dict[str, Any]) -> str:
    nd = rep["netd"]
    note = "" if nd["endpoints"] == nd["asked_endpoints"] else f" (of {nd['asked_endpoints']} asked: build budget)"
    rows = [
        [
            "netd (kill -9, host netns + /run lost, start -> API up)",
            f"{nd['networks']} x {nd['endpoints']}{note}",
            f"{nd['wall_ms_median']} (runs {nd['wall_ms']}; start-up reconcile {nd['startup_reconcile_ms']})",
            f"RSS {nd['rss_mib_after_replay']} MiB",
        ]
    ]
    ratios = []
    for key, label in (
        ("floor", "ip -batch floor (netns add, host batch, nft -f, ip -n batch per netns)"),
        ("pyfloor", "python-netlink floor (one process, raw rtnetlink; nft -f)"),
    ):
        fl = rep.get(key)
        if fl is None:
            continue
        rows.append(
            [
                label,
                f"{fl['networks']} x {fl['endpoints']}",
                f"{fl['wall_ms_median']} (runs {fl['wall_ms']})",
                f"parts {fl['parts_ms']}",
            ]
        )
        ratios.append(f"netd / {key} = {rep[f'netd_over_{key}']}x")
    return md_table(rows, ["cold replay", "networks x endpoints", "wall ms (median)", "notes"]) + (
        "\n\n" + ", ".join(ratios)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", type=int, default=50)
    ap.add_argument("--endpoints", type=int, default=1000, help="endpoints in all (spread over networks)")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds to build the state to replay")
    ap.add_argument("--floors", default="pyfloor,ip-batch")
    ap.add_argument("--rev", help="benchmark netd as committed at this git revision (default: working tree)")
    args = ap.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="netd-replay-") as d:
        info["netd"] = use_revision(args.rev, Path(d))
        floors = tuple(f for f in args.floors.split(",") if f)
        rep = measure(Path(d), args.networks, args.endpoints, args.budget, floors)
    print(f"wrote {write_result('replay', {'machine': info, **rep})}")
    print("\n" + render(rep))
    left = leftovers([PREFIX, "ndt-h-bn"])
    if left:
        print(f"WARNING: namespaces left behind: {left}")


if __name__ == "__main__":
    main()
