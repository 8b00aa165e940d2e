"""Print timings of the kernel layer (not a test).

``PYTHONPATH=tests/integration/kernel .venv/bin/python tests/integration/kernel/bench_kernel.py [N]``

Runs inside a throw-away host namespace like the tests and cleans up after itself.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Address, ip_interface
from pathlib import Path

import structlog
from kernelenv import Env, sh, umount_all_under

from netd.core.linkspec import BridgeSpec, NsRef, VethSpec
from netd.kernel.facade import Kernel


def ms(xs: list[float]) -> str:
    xs = sorted(xs)

    def p(q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000

    med = statistics.median(xs) * 1000
    return f"median {med:.2f} ms, p90 {p(0.9):.2f} ms, max {xs[-1] * 1000:.2f} ms (n={len(xs)})"


def main(n: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    tag = secrets.token_hex(4)
    base = Path(f"/run/netd-test-{tag}")
    env = Env(f"t-{tag}", f"/run/netns/t-{tag}", base / "netns")
    sh("ip", "netns", "add", env.host_name)

    async def body(k: Kernel) -> None:
        br = BridgeSpec("br-b", "net", 1500, (ip_interface("10.88.0.1/16"),))
        await k.ensure_bridge(br)
        t_ns, t_cold, t_warm, t_noop = [], [], [], []
        for i in range(n):
            t0 = time.perf_counter()
            await k.ensure_netns(f"c{i}")
            t_ns.append(time.perf_counter() - t0)
        specs = [
            VethSpec(
                host_ifname=f"vb{i}",
                owner=f"e{i}",
                bridge="br-b",
                mtu=1500,
                netns=NsRef(k.netns_path(f"c{i}")),
                peer_ifname="eth0",
                mac=f"02:42:0a:58:{i >> 8:02x}:{i & 255:02x}",
                addresses=(ip_interface(f"10.88.{(i + 2) >> 8}.{(i + 2) & 255}/16"),),
                gateway4=IPv4Address("10.88.0.1"),
            )
            for i in range(n)
        ]
        for s in specs:  # warm: the netns socket was opened by ensure_netns
            t0 = time.perf_counter()
            await k.ensure_veth(s)
            t_warm.append(time.perf_counter() - t0)
        for s in specs:
            t0 = time.perf_counter()
            await k.ensure_veth(s)
            t_noop.append(time.perf_counter() - t0)
        await k.delete_links([s.host_ifname for s in specs])
        for s in specs:  # cold: drop the cached socket first
            k.forget_netns(s.netns.path)
            s2 = replace(s, host_ifname="w" + s.host_ifname)
            t0 = time.perf_counter()
            await k.ensure_veth(s2)
            t_cold.append(time.perf_counter() - t0)
        half = n // 2
        t0 = time.perf_counter()
        for s in specs[:half]:
            await k.delete_links(["w" + s.host_ifname])
        t_del1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        await k.delete_links(["w" + s.host_ifname for s in specs[half:]])
        t_del = time.perf_counter() - t0
        t0 = time.perf_counter()
        await k.observe()
        t_obs = time.perf_counter() - t0
        t_rm = []
        for i in range(n):
            t0 = time.perf_counter()
            await k.remove_netns(f"c{i}")
            t_rm.append(time.perf_counter() - t0)
        print(f"ensure_netns       {ms(t_ns)}")
        print(f"ensure_veth warm   {ms(t_warm)}")
        print(f"ensure_veth cold   {ms(t_cold)}")
        print(f"ensure_veth no-op  {ms(t_noop)}")
        print(f"delete_links 1 by 1 {t_del1 * 1000:.1f} ms for {half} ({t_del1 * 1000 / half:.2f} ms each)")
        print(
            f"delete_links batch  {t_del * 1000:.1f} ms for {n - half} ({t_del * 1000 / (n - half):.2f} ms each)"
        )
        print(f"observe            {t_obs * 1000:.2f} ms with {n + 2} links")
        print(f"remove_netns       {ms(t_rm)}")

    try:
        env.run(body)
    finally:
        umount_all_under(base)
        shutil.rmtree(base, ignore_errors=True)
        sh("ip", "netns", "del", env.host_name, check=False)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
