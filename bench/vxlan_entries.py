"""Programming an overlay network's remote endpoints: 1000 peers (an FDB entry and IPv4 + IPv6 neighbour entries
each, 3000 entries) in one batch against one request per entry.

Runs in a throw-away namespace (a VXLAN device on a bridge, an underlay veth for its local address), removed at
the end.  Prints milliseconds per variant (median of ``--reps``) and the load average:

    .venv/bin/python bench/vxlan_entries.py [--peers 1000] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from functools import partial
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration" / "kernel"))

from kernelenv import Env, umount_all_under  # noqa: E402
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST  # noqa: E402
from pyroute2.netlink.rtnl.ndmsg import ndmsg  # noqa: E402

from netd.core.linkspec import BridgeSpec  # noqa: E402
from netd.core.vxlanspec import EntryPlan, FdbEntry, NeighEntry, PeerEntry, VxlanSpec, build_entries  # noqa: E402
from netd.kernel import ndraw, nlbatch, rtbatch  # noqa: E402
from netd.kernel import vxlan as vxlanops  # noqa: E402
from netd.kernel.facade import Kernel  # noqa: E402
from netd.kernel.ndraw import NTF_SELF, NUD_PERMANENT, RTM_NEWNEIGH  # noqa: E402

LOCAL = "192.0.2.1"


def _ndmsg(family: int, ifindex: int, flags: int, attrs: list[tuple[str, str]]) -> Any:
    """The same request as netd.kernel.ndraw's, built with pyroute2's message class (the comparison)."""
    msg = ndmsg()
    msg["family"], msg["ifindex"], msg["flags"], msg["state"] = family, ifindex, flags, NUD_PERMANENT
    msg["attrs"] = attrs
    msg["header"]["type"] = RTM_NEWNEIGH
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    return msg


def pyroute2_fdb_put(ifindex: int, e: FdbEntry) -> Any:
    return _ndmsg(socket.AF_BRIDGE, ifindex, NTF_SELF, [("NDA_LLADDR", e.mac), ("NDA_DST", str(e.dst))])


def pyroute2_neigh_put(ifindex: int, e: NeighEntry) -> Any:
    family = socket.AF_INET if e.ip.version == 4 else socket.AF_INET6
    return _ndmsg(family, ifindex, 0, [("NDA_DST", str(e.ip)), ("NDA_LLADDR", e.mac)])


def peers(n: int) -> list[PeerEntry]:
    out = []
    for i in range(n):
        hi, lo = divmod(i + 2, 256)
        out.append(
            PeerEntry(
                f"02:42:0a:63:{hi:02x}:{lo:02x}",
                (ip_address(f"10.99.{hi}.{lo}"), ip_address(f"fd00:99::{i + 2:x}")),
                ip_address(f"192.0.2.{2 + i % 200}"),
            )
        )
    return out


async def run(k: Kernel, n: int, reps: int) -> dict[str, list[float]]:
    await k.ensure_bridge(BridgeSpec("br-bench", "bench", None, (ip_interface("10.99.0.1/16"),)))
    await k.ensure_vxlan(VxlanSpec("vx-bench", "bench", 4242, ip_address(LOCAL), "br-bench"))
    ipr = await k._host_socket()
    index = await vxlanops.device_index(ipr, "vx-bench")
    want = peers(n)
    fdb, neigh = build_entries(want)
    times: dict[str, list[float]] = {}

    def note(name: str, t0: float) -> None:
        times.setdefault(name, []).append((time.perf_counter() - t0) * 1000)

    async def clear() -> None:
        t0 = time.perf_counter()
        plan = await k.ensure_vxlan_peers("vx-bench", [])
        if len(plan.fdb_del) == n:
            note("delete all, batched (observe + plan + write)", t0)
        assert not (await k.observe_vxlan_entries("vx-bench")).fdb

    for _ in range(reps):
        await clear()
        t0 = time.perf_counter()
        await k.apply_vxlan_entries("vx-bench", EntryPlan(fdb_put=tuple(fdb), neigh_put=tuple(neigh)))
        note("raw, batched (apply_vxlan_entries)", t0)
        t0 = time.perf_counter()
        seen = await k.observe_vxlan_entries("vx-bench")
        note("observe (raw dump, 3 tables)", t0)
        assert len(seen.fdb) == n and len(seen.neigh) == 2 * n
        t0 = time.perf_counter()
        assert not await k.ensure_vxlan_peers("vx-bench", want)
        note("ensure, nothing to do (observe + plan)", t0)

        await clear()
        t0 = time.perf_counter()
        await k.ensure_vxlan_peers("vx-bench", want)
        note("ensure from empty (observe + plan + batched write)", t0)

        await clear()
        t0 = time.perf_counter()
        for e in fdb:
            await vxlanops.write_entries(
                "vx-bench", [(partial(ndraw.fdb_put, ifindex=index, e=e), "")], "put", False
            )
        for ne in neigh:
            await vxlanops.write_entries(
                "vx-bench", [(partial(ndraw.neigh_put, ifindex=index, e=ne), "")], "put", False
            )
        note("raw, one request per datagram", t0)

        await clear()
        t0 = time.perf_counter()
        msgs = [pyroute2_fdb_put(index, e) for e in fdb] + [pyroute2_neigh_put(index, ne) for ne in neigh]
        for start in range(0, len(msgs), rtbatch.BATCH):
            results = await nlbatch.run(ipr, msgs[start : start + rtbatch.BATCH])
            assert not any(results)
        note("pyroute2 messages, batched (nlbatch.run)", t0)

        await clear()
        t0 = time.perf_counter()
        for e in fdb:
            # pyroute2's fdb() adds NTF_SELF/permanent only for add/append/del: "replace" without them lands
            # in the bridge's FDB (the master's), not the VXLAN device's
            await ipr.fdb("replace", ifindex=index, lladdr=e.mac, dst=str(e.dst), flags=2, state=0x80)
        for ne in neigh:
            await ipr.neigh("replace", ifindex=index, dst=str(ne.ip), lladdr=ne.mac, state=0x80)
        note("pyroute2 fdb()/neigh(), one request each", t0)
        assert len((await k.observe_vxlan_entries("vx-bench")).fdb) == n
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (creates a network namespace)")
    tag = secrets.token_hex(3)
    host = f"bvx-{tag}"
    base = Path(f"/run/netd-bench-{tag}")
    subprocess.run(["ip", "netns", "add", host], check=True)
    try:
        for cmd in (
            ["link", "add", "u0", "type", "veth", "peer", "name", "u1"],
            ["addr", "add", f"{LOCAL}/24", "dev", "u0"],
            ["link", "set", "u0", "up"],
            ["link", "set", "u1", "up"],
        ):
            subprocess.run(["ip", "-n", host, *cmd], check=True)
        env = Env(host, f"/run/netns/{host}", base / "netns")

        async def body(k: Kernel) -> Any:
            return await run(k, args.peers, args.reps)

        times = env.run(body)
    finally:
        umount_all_under(base)
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", host], check=False)
    entries = 3 * args.peers
    print(
        f"{args.peers} peers = {entries} entries (FDB + IPv4 + IPv6 neighbour), reps={args.reps}, "
        f"batch={rtbatch.BATCH} messages/datagram, load {os.getloadavg()[0]:.2f}"
    )
    for name, ms in times.items():
        med = statistics.median(ms)
        print(
            f"  {name:52s} {med:9.1f} ms  ({med * 1000 / entries:6.1f} us/entry)  runs: "
            + ", ".join(f"{m:.0f}" for m in ms)
        )


if __name__ == "__main__":
    main()
