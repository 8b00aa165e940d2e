"""netd.kernel against the real kernel, each test inside its own namespaces (see conftest.py)."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_interface
from pathlib import Path
from typing import Any

import pytest
from kernelenv import Env, mountpoints, nsip, sh
from pyroute2 import AsyncIPRoute

from netd.core.errors import KernelError
from netd.core.linkspec import BridgeSpec, NsRef, VethSpec, owner_alias
from netd.kernel import nlbatch
from netd.kernel.events import link_events
from netd.kernel.facade import Kernel
from netd.kernel.link import get_link
from netd.kernel.observe import decode_addr, decode_link

V4 = ip_interface("10.77.0.1/24")
V6 = ip_interface("fd00:77::1/64")


def bridge(name: str = "br-t", owner: str = "net1", **kw: Any) -> BridgeSpec:
    return BridgeSpec(
        ifname=name, owner=owner, mtu=kw.pop("mtu", 1400), addresses=kw.pop("addresses", (V4, V6)), **kw
    )


def veth(env: Env, n: int, ns: str | None = None, **kw: Any) -> VethSpec:
    return VethSpec(
        host_ifname=f"vh{n}",
        owner=f"ep{n}",
        bridge=kw.pop("bridge", "br-t"),
        mtu=1400,
        netns=NsRef(env.ns(ns or f"c{n}")),
        peer_ifname="eth0",
        mac=f"02:42:0a:4d:00:{n + 10:02x}",
        addresses=(ip_interface(f"10.77.0.{n + 10}/24"), ip_interface(f"fd00:77::{n + 10:x}/64")),
        gateway4=IPv4Address("10.77.0.1"),
        gateway6=IPv6Address("fd00:77::1"),
        **kw,
    )


def link(env_or_path: Env | str, name: str) -> dict[str, Any]:
    path = env_or_path.host_path if isinstance(env_or_path, Env) else env_or_path
    return nsip(path, "-d", "link", "show", "dev", name)[0]  # type: ignore[no-any-return]


def addrs(path: str, name: str) -> set[str]:
    out = nsip(path, "addr", "show", "dev", name)
    return {f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"] if a.get("scope") != "link"}


def ping(path: str, ip: str) -> bool:
    """One reply within 5 s (an echo a second): neighbour discovery on a busy machine can outlast one second."""
    cmd = ["nsenter", f"--net={path}", "ping", "-n", "-q", "-c1", "-w5"]
    return sh(*cmd, ip, check=False).returncode == 0


# ------------------------------------------------------------------------------------------------ netns


def test_netns_create_remove_leaves_no_mount(env: Env) -> None:
    async def body(k: Kernel) -> None:
        t0 = time.perf_counter()
        assert await k.ensure_netns("c1") is True
        print(f"\nensure_netns (create + socket + lo up): {(time.perf_counter() - t0) * 1000:.2f} ms")
        assert await k.ensure_netns("c1") is False
        path = k.netns_path("c1")
        assert Kernel.ns_alive(path)
        assert path in mountpoints()
        lo = link(path, "lo")
        assert "UP" in lo["flags"]
        # the dir is a shared mount, like /run/netns made by iproute2
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            line = next(li for li in f if li.split(" ")[4] == str(env.netns_dir))
        assert "shared:" in line
        await k.remove_netns("c1")
        await k.remove_netns("c1")  # missing is fine
        assert not os.path.exists(path)
        assert path not in mountpoints()
        assert not Kernel.ns_alive(path)

    env.run(body)


def test_ns_alive_rejects_plain_files_and_dead_pids(env: Env, tmp_path: Any) -> None:
    plain = tmp_path / "stale"
    plain.write_text("")
    assert not Kernel.ns_alive(str(plain))
    proc = sh("sh", "-c", "echo $$")
    assert not Kernel.ns_alive(f"/proc/{proc.stdout.strip()}/ns/net")
    assert Kernel.ns_alive(env.host_path)
    assert not Kernel.ns_alive("/proc/self/ns/mnt")  # an nsfs file, but not a network namespace


def test_stale_plain_file_is_replaced(env: Env) -> None:
    async def body(k: Kernel) -> None:
        assert await k.ensure_netns("c1") is True  # makes the dir
        await k.remove_netns("c1")
        open(k.netns_path("c1"), "w").close()  # as after a reboot on a persistent dir
        assert await k.ensure_netns("c1") is True
        assert Kernel.ns_alive(k.netns_path("c1"))
        await k.remove_netns("c1")

    env.run(body)


def test_nonexistent_nsref_is_an_error_not_a_new_netns(env: Env) -> None:
    async def body(k: Kernel) -> None:
        await k.ensure_bridge(bridge())
        spec = veth(env, 1, ns="nope")
        with pytest.raises(KernelError, match="does not exist"):
            await k.ensure_veth(spec)
        with pytest.raises(KernelError):
            await k.ns_socket(env.ns("nope"))
        assert not os.path.exists(env.ns("nope"))
        assert [x["ifname"] for x in env.ip("link")] == ["lo", "br-t"]

    env.run(body)


# ------------------------------------------------------------------------------------------------ bridge


def test_bridge_create_idempotent_and_repairs(env: Env) -> None:
    async def body(k: Kernel) -> None:
        await k.ensure_bridge(bridge())
        br = link(env, "br-t")
        assert br["ifalias"] == owner_alias("net1")
        assert br["mtu"] == 1400
        assert "UP" in br["flags"]
        assert br["linkinfo"]["info_kind"] == "bridge"
        assert br["linkinfo"]["info_data"]["stp_state"] == 0
        assert br["linkinfo"]["info_data"]["forward_delay"] == 0
        assert addrs(env.host_path, "br-t") == {"10.77.0.1/24", "fd00:77::1/64"}
        info = env.ip("addr", "show", "dev", "br-t")[0]["addr_info"]
        v6 = next(a for a in info if a["local"] == "fd00:77::1")
        assert not v6.get("tentative")

        await k.ensure_bridge(bridge())  # no-op
        assert addrs(env.host_path, "br-t") == {"10.77.0.1/24", "fd00:77::1/64"}

        sh("ip", "-n", env.host_name, "link", "set", "br-t", "mtu", "1300", "down")
        sh("ip", "-n", env.host_name, "addr", "del", "10.77.0.1/24", "dev", "br-t")
        sh("ip", "-n", env.host_name, "addr", "add", "10.99.0.1/24", "dev", "br-t")
        await k.ensure_bridge(bridge())
        br = link(env, "br-t")
        assert br["mtu"] == 1400 and "UP" in br["flags"]
        assert addrs(env.host_path, "br-t") == {"10.77.0.1/24", "fd00:77::1/64"}

    env.run(body)


def test_bridge_foreign_name_clash_and_adopt(env: Env) -> None:
    sh("ip", "-n", env.host_name, "link", "add", "br-foreign", "type", "bridge")
    sh("ip", "-n", env.host_name, "link", "set", "br-foreign", "up")

    async def body(k: Kernel) -> None:
        with pytest.raises(KernelError, match=r'bridge "br-foreign".*com\.docker\.network\.bridge\.name'):
            await k.ensure_bridge(bridge("br-foreign"))
        assert "ifalias" not in link(env, "br-foreign")
        await k.ensure_bridge(bridge("br-foreign", adopt=True, mtu=None, addresses=(V4,)))
        br = link(env, "br-foreign")
        assert "ifalias" not in br  # adopted, never marked
        assert addrs(env.host_path, "br-foreign") == {"10.77.0.1/24"}
        with pytest.raises(KernelError, match="adopt failed"):
            await k.ensure_bridge(bridge("br-missing", adopt=True))
        # an empty, down, alias-less bridge is what netd leaves if it stops between create and alias: claimed
        sh("ip", "-n", env.host_name, "link", "add", "br-half", "type", "bridge")
        await k.ensure_bridge(bridge("br-half", addresses=()))
        assert link(env, "br-half")["ifalias"] == "netd:net1"
        # ... but not once it has a port
        sh("ip", "-n", env.host_name, "link", "add", "br-down", "type", "bridge")
        sh(
            "ip",
            "-n",
            env.host_name,
            "link",
            "add",
            "pd0",
            "master",
            "br-down",
            "type",
            "veth",
            "peer",
            "name",
            "pd1",
        )
        with pytest.raises(KernelError, match="not managed by netd"):
            await k.ensure_bridge(bridge("br-down"))
        # a name taken by a non-bridge
        sh("ip", "-n", env.host_name, "link", "add", "vx-x", "type", "veth", "peer", "name", "vx-y")
        with pytest.raises(KernelError, match='kind "veth"'):
            await k.ensure_bridge(bridge("vx-x"))

    env.run(body)


# ------------------------------------------------------------------------------------------------ veth


def test_veth_connect_ping_and_idempotent(env: Env) -> None:
    async def body(k: Kernel) -> dict[str, float]:
        t: dict[str, float] = {}
        await k.ensure_bridge(bridge())
        for n in (1, 2):
            await k.ensure_netns(f"c{n}")
        t0 = time.perf_counter()
        await k.ensure_veth(veth(env, 1))
        t["warm"] = time.perf_counter() - t0
        await k.ensure_veth(veth(env, 2))
        t0 = time.perf_counter()
        await k.ensure_veth(veth(env, 1))
        t["noop"] = time.perf_counter() - t0
        await k.ensure_veth(veth(env, 2))
        # a namespace netd did not create: the first use opens the socket (cold)
        sh("ip", "netns", "add", f"{env.host_name}-x")
        try:
            cold = replace(veth(env, 3), netns=NsRef(f"/run/netns/{env.host_name}-x"))
            t0 = time.perf_counter()
            await k.ensure_veth(cold)
            t["cold"] = time.perf_counter() - t0
            assert await k.peer_exists(cold)
            k.forget_netns(cold.netns.path)
        finally:
            sh("ip", "netns", "del", f"{env.host_name}-x")
        return t

    t = env.run(body)
    ms = {key: f"{v * 1000:.2f} ms" for key, v in t.items()}
    print(f"\nensure_veth warm {ms['warm']}, cold {ms['cold']}, noop {ms['noop']}")
    c1, c2 = env.ns("c1"), env.ns("c2")
    host_side = link(env, "vh1")
    assert host_side["ifalias"] == "netd:ep1"
    assert host_side["master"] == "br-t"
    assert "UP" in host_side["flags"]
    assert host_side["mtu"] == 1400
    # a bridge port generates no IPv6 address: no link-local, DAD or MLD flooded to the bridge
    assert (
        sh("ip", "netns", "exec", env.host_name, "cat", "/proc/sys/net/ipv6/conf/vh1/addr_gen_mode").stdout
        == "1\n"
    )
    assert "inet6" not in sh("ip", "-n", env.host_name, "addr", "show", "vh1").stdout
    peer = link(c1, "eth0")
    assert peer["address"] == "02:42:0a:4d:00:0b" and peer["mtu"] == 1400 and "UP" in peer["flags"]
    assert addrs(c1, "eth0") == {"10.77.0.11/24", "fd00:77::b/64"}
    routes = nsip(c1, "route", "show", "default")
    assert routes[0]["gateway"] == "10.77.0.1"
    assert nsip(c1, "-6", "route", "show", "default")[0]["gateway"] == "fd00:77::1"
    assert ping(c1, "10.77.0.12")
    assert ping(c1, "fd00:77::c")
    assert ping(c2, "10.77.0.1")
    assert ping(env.host_path, "10.77.0.11")


def test_create_first_falls_back_when_the_name_is_taken(env: Env) -> None:
    """seen_missing (the observe found no link) makes ensure_veth create without a check; if the name is taken
    after all, it falls back to the checks: its own healthy veth is left as it is, a foreign link is refused and
    left alone, and the peer in the namespace is not touched."""
    sh("ip", "-n", env.host_name, "link", "add", "vh2", "type", "bridge")

    async def body(k: Kernel) -> str:
        await k.ensure_bridge(bridge())
        for n in (1, 2):
            await k.ensure_netns(f"c{n}")
        await k.ensure_veth(veth(env, 1), seen_missing=True)
        before = link(env, "vh1")["ifindex"]
        await k.ensure_veth(veth(env, 1), seen_missing=True)  # a stale "missing": verified, not recreated
        assert link(env, "vh1")["ifindex"] == before
        with pytest.raises(KernelError) as exc:
            await k.ensure_veth(veth(env, 2), seen_missing=True)
        return str(exc.value)

    message = env.run(body)
    assert 'an interface of kind "bridge" owned by nobody already has this name' in message
    assert link(env, "vh2")["ifname"] == "vh2"  # the foreign bridge is still there
    assert addrs(env.ns("c1"), "eth0") == {"10.77.0.11/24", "fd00:77::b/64"}
    assert [x["ifname"] for x in nsip(env.ns("c2"), "link")] == ["lo"]  # nothing half-made


def test_veth_repairs_half_built(env: Env) -> None:
    async def body(k: Kernel) -> None:
        await k.ensure_bridge(bridge())
        await k.ensure_bridge(bridge("br-o", owner="net2", addresses=()))
        await k.ensure_netns("c1")
        spec = veth(env, 1)
        await k.ensure_veth(spec)

        sh("ip", "-n", env.host_name, "link", "del", "vh1")  # takes the peer with it
        await k.ensure_veth(spec)
        assert link(env, "vh1")["master"] == "br-t"
        assert await k.peer_exists(spec)

        sh("ip", "-n", env.host_name, "link", "set", "vh1", "master", "br-o")
        sh("ip", "-n", env.host_name, "link", "set", "vh1", "down")
        await k.ensure_veth(spec)
        vh = link(env, "vh1")
        assert vh["master"] == "br-t" and "UP" in vh["flags"]

        sh("nsenter", f"--net={env.ns('c1')}", "ip", "addr", "flush", "dev", "eth0", "scope", "global")
        assert not await k.peer_exists(spec)

        # the bridge was recreated behind our back: the cached bridge index is stale
        sh("ip", "-n", env.host_name, "link", "del", "br-t")
        await k.ensure_bridge(bridge())
        await k.ensure_veth(spec)
        assert link(env, "vh1")["master"] == "br-t"
        assert await k.peer_exists(spec)
        assert ping(env.ns("c1"), "10.77.0.1")

        # netd stopped between create and the final "alias + up" request: the pair is rebuilt
        sh("ip", "-n", env.host_name, "link", "del", "vh1")
        cmd = ["ip", "-n", env.host_name, "link", "add", "vh1", "type", "veth", "peer", "name", "eth0"]
        sh(*cmd, "netns", env.ns("c1"))
        await k.ensure_veth(spec)
        assert link(env, "vh1")["ifalias"] == "netd:ep1"
        assert await k.peer_exists(spec)

        # a foreign interface with the endpoint's name is never touched
        sh("ip", "-n", env.host_name, "link", "add", "vh9", "type", "bridge")
        with pytest.raises(KernelError, match='"vh9"'):
            await k.ensure_veth(veth(env, 9, ns="c1"))

    env.run(body)


def test_veth_stale_peer_name_in_netns(env: Env) -> None:
    """A leftover veth called eth0 in the container namespace (its other end renamed away) is replaced."""

    async def body(k: Kernel) -> None:
        await k.ensure_bridge(bridge())
        await k.ensure_netns("c1")
        await k.ensure_veth(veth(env, 1))
        sh("ip", "-n", env.host_name, "link", "set", "vh1", "name", "vh-renamed")
        await k.ensure_veth(veth(env, 1))
        assert await k.peer_exists(veth(env, 1))

    env.run(body)


def test_veth_foreign_peer_name_in_netns_is_kept(env: Env) -> None:
    """An eth0 netd did not make (no alias) in the target namespace is never deleted: the create fails clearly."""

    async def body(k: Kernel) -> None:
        await k.ensure_bridge(bridge())
        await k.ensure_netns("c1")
        ns = str(env.netns_dir / "c1")
        sh("nsenter", f"--net={ns}", "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "theirs")
        with pytest.raises(KernelError, match="not made by netd already has this name"):
            await k.ensure_veth(veth(env, 1))
        assert sh("nsenter", f"--net={ns}", "ip", "-o", "link", "show", "eth0").returncode == 0
        assert await k.ns_has_link(ns, "eth0")
        await k.ensure_veth(replace(veth(env, 1), peer_ifname="eth1"))
        assert sh("nsenter", f"--net={ns}", "ip", "-o", "link", "show", "eth1").stdout.count("netd:ep1") == 1

    env.run(body)


# ------------------------------------------------------------------------------------------------ delete/observe


def test_delete_links_batch(env: Env) -> None:
    n = 30

    async def body(k: Kernel) -> float:
        await k.ensure_bridge(bridge())
        await k.ensure_netns("c")
        for i in range(n):
            spec = veth(env, i, ns="c")
            await k.ensure_veth(replace(spec, peer_ifname=f"e{i}", addresses=(), gateway4=None, gateway6=None))
        names = [f"vh{i}" for i in range(n)]
        t0 = time.perf_counter()
        await k.delete_links([*names, "does-not-exist"])
        dt = time.perf_counter() - t0
        await k.delete_links(names)  # all missing: fine
        await k.delete_links(["br-t"])
        await k.delete_links([])
        return dt

    dt = env.run(body)
    print(f"\ndelete_links {n} veths: {dt * 1000:.1f} ms ({dt * 1000 / n:.2f} ms each)")
    assert [x["ifname"] for x in env.ip("link")] == ["lo"]
    assert [x["ifname"] for x in nsip(env.ns("c") if os.path.exists(env.ns("c")) else env.host_path, "link")] == [
        "lo"
    ]


def test_observe_ownership(env: Env) -> None:
    sh("ip", "-n", env.host_name, "link", "add", "br-foreign", "type", "bridge")
    sh("ip", "-n", env.host_name, "link", "add", "fv0", "type", "veth", "peer", "name", "fv1")

    async def body(k: Kernel) -> None:
        await k.ensure_bridge(bridge())
        await k.ensure_netns("c1")
        await k.ensure_veth(veth(env, 1))
        host = await k.observe()
        assert set(host.bridges) == {"net1"}
        assert set(host.veths) == {"ep1"}
        br = host.bridges["net1"]
        assert br.ifname == "br-t" and br.kind == "bridge" and br.up and br.mtu == 1400
        assert set(br.addresses) == {V4, V6}
        vh = host.veths["ep1"]
        assert vh.master == br.index and vh.ifname == "vh1"
        assert {"br-foreign", "fv0", "fv1", "lo", "br-t", "vh1"} <= set(host.by_name)
        assert host.by_name["br-foreign"].owner is None
        assert host.by_index[br.index] is host.by_name["br-t"]

    env.run(body)


def test_validation_reads_beside_a_reconcile_do_not_collide(env: Env, tmp_path: Path) -> None:
    """A netlink socket serves one dump at a time (a second gets EBUSY): the service's validation reads run beside
    a reconcile's dumps, so they must not share its socket.  80 links make each dump span several messages."""
    batch = tmp_path / "links"
    batch.write_text("".join(f"link add b{i} type bridge\n" for i in range(80)))
    sh("ip", "-n", env.host_name, "-batch", str(batch))

    async def body(k: Kernel) -> list[int]:
        await k.observe()  # the sockets exist before the race
        await k.host_prefixes()
        seen: list[int] = []

        async def reconcile() -> None:  # one writer (the reconciler's lock), one reader (the service's lock)
            for _ in range(10):
                seen.append(len((await k.observe()).by_name))

        async def validate() -> None:
            for _ in range(10):
                seen.append(len((await k.observe()).by_name))
                await k.host_prefixes()

        await asyncio.gather(reconcile(), validate())
        return seen

    seen = env.run(body)
    assert seen == [81] * 20


def test_get_link_does_not_keep_the_kernels_late_acks(env: Env) -> None:
    """pyroute2 leaves each "get"'s ack in a queue nobody reads (one datagram per call, for the socket's life);
    get_link drops them.  If pyroute2 stops doing that, the first assertion fails: remove drop_late_acks then."""

    async def body(k: Kernel) -> tuple[int, int]:
        ipr = AsyncIPRoute()
        await ipr.setup_endpoint()
        try:
            for _ in range(200):
                await ipr.link("get", ifname="lo")
            await asyncio.sleep(0.1)
            raw = ipr.msg_queue.root.qsize()
            for _ in range(200):
                assert await get_link(ipr, "lo") is not None
            await asyncio.sleep(0.1)
            return raw, ipr.msg_queue.root.qsize()
        finally:
            ipr.close()

    raw, kept = env.run(body)
    assert raw >= 190 and kept <= 2  # the last call's ack, at most


def test_one_datagram_of_requests_runs_in_order_with_an_answer_each(env: Env) -> None:
    """nlbatch: the default route via a gateway is accepted only because the address and the link-up before it
    in the same datagram were applied first; a second run reports EEXIST for the addresses only."""
    sh("ip", "-n", env.host_name, "link", "add", "bv0", "type", "veth", "peer", "name", "bv1")

    async def body(k: Kernel) -> tuple[list[int | None], list[int | None], list[int | None]]:
        ipr = AsyncIPRoute()
        await ipr.setup_endpoint()
        try:
            index = (await get_link(ipr, "bv0"))["index"]
            msgs = [
                nlbatch.add_address(index, ip_interface("10.66.0.2/24")),
                nlbatch.add_address(index, ip_interface("fd00:66::2/64")),
                nlbatch.set_up(index),
                nlbatch.replace_default_route(index, IPv4Address("10.66.0.1")),
                nlbatch.replace_default_route(index, IPv6Address("fd00:66::1")),
            ]
            first = [e and e.code for e in await nlbatch.run(ipr, msgs)]
            second = [e and e.code for e in await nlbatch.run(ipr, msgs)]
            offlink = [
                e and e.code
                for e in await nlbatch.run(
                    ipr,
                    [
                        nlbatch.replace_default_route(index, IPv4Address("10.99.0.1")),
                        nlbatch.set_up(index),
                    ],
                )
            ]
            return first, second, offlink
        finally:
            ipr.close()

    first, second, offlink = env.run(body)
    assert first == [None] * 5
    assert second == [errno.EEXIST, errno.EEXIST, None, None, None]
    assert offlink[0] in (errno.ENETUNREACH, errno.EINVAL) and offlink[1] is None  # the next one still ran
    routes = nsip(env.host_path, "route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in routes] == [("10.66.0.1", "bv0")]
    assert addrs(env.host_path, "bv0") == {"10.66.0.2/24", "fd00:66::2/64"}


def test_raw_observe_reads_what_pyroute2_decodes(env: Env) -> None:
    """observe decodes links and addresses from raw netlink; pyroute2's full decoder must agree, link by link,
    and a scoped observe gets each link's own addresses (filtered in the kernel) and no one else's."""
    for cmd in (
        "link add br-r type bridge",
        "link set br-r alias netd:net9 mtu 1400 up",
        "addr add 10.55.0.1/24 dev br-r",
        "addr add fd00:55::1/64 dev br-r",
        "link add rv0 type veth peer name rv1",
        "link set rv0 master br-r alias netd:ep9",
        "addr add 10.56.0.1/24 dev rv1",
        "link add mv0 link rv1 type macvlan mode bridge",
    ):
        sh("ip", "-n", env.host_name, *cmd.split())

    def sort_addresses(link: Any) -> Any:
        return replace(link, addresses=tuple(sorted(link.addresses, key=str)))

    async def body(k: Kernel) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        ipr = AsyncIPRoute()
        await ipr.setup_endpoint()
        try:
            by_index: dict[int, list[Any]] = {}
            for m in [m async for m in await ipr.addr("dump")]:
                iface = decode_addr(m)
                if iface is not None:
                    by_index.setdefault(int(m["index"]), []).append(iface)
            expected = {}
            for m in [m async for m in await ipr.link("dump")]:
                link = decode_link(m, tuple(by_index.get(int(m["index"]), ())))
                expected[link.ifname] = sort_addresses(link)
        finally:
            ipr.close()

        def norm(host: Any) -> dict[str, Any]:
            return {
                n: replace(link, addresses=tuple(sorted(link.addresses, key=str)))
                for n, link in host.by_name.items()
            }

        return expected, norm(await k.observe()), norm(await k.observe(["br-r", "rv1", "absent0"]))

    expected, full, scoped = env.run(body)
    assert full == expected
    assert set(full) == {"lo", "br-r", "rv0", "rv1", "mv0"}
    assert full["br-r"].owner == "net9" and full["br-r"].kind == "bridge" and full["br-r"].mtu == 1400
    assert full["mv0"].kind == "macvlan" and full["mv0"].link_index == full["rv1"].index
    assert scoped == {n: expected[n] for n in ("br-r", "rv1")}
    assert {str(a) for a in scoped["br-r"].addresses} == {"10.55.0.1/24", "fd00:55::1/64"}


# ------------------------------------------------------------------------------------------------ sysctl/events


def test_sysctl_in_netns_vs_host(env: Env) -> None:
    async def body(k: Kernel) -> None:
        await k.ensure_netns("c1")
        ns = NsRef(k.netns_path("c1"))
        assert await k.get_sysctl("net.ipv4.ip_forward") == "0"
        await k.set_sysctl("net.ipv4.ip_forward", "1", ns)
        assert await k.get_sysctl("net.ipv4.ip_forward", ns) == "1"
        assert await k.get_sysctl("net.ipv4.ip_forward") == "0"
        await k.set_sysctl("net.ipv4.ip_forward", "1")
        assert await k.get_sysctl("net.ipv4.ip_forward") == "1"
        with pytest.raises(KernelError, match=r"no\.such"):
            await k.get_sysctl("net.ipv4.no.such")
        with pytest.raises(KernelError):
            await k.set_sysctl("net.ipv4.ip_forward", "1", NsRef(env.ns("nope")))

    env.run(body)
    assert sh("ip", "netns", "exec", env.host_name, "sysctl", "-n", "net.ipv4.ip_forward").stdout == "1\n"
    # the machine's own namespace was not touched by the "host" writes
    with open("/proc/sys/net/ipv4/ip_forward", encoding="ascii") as f:
        machine = f.read().strip()
    assert machine in ("0", "1")


def test_events_link_deleted(env: Env) -> None:
    async def body(k: Kernel) -> list[str]:
        await k.ensure_bridge(bridge())
        await k.ensure_netns("c1")
        await k.ensure_veth(veth(env, 1))
        seen: list[str] = []
        gen = k.events()

        async def collect() -> None:
            async for reason in gen:
                seen.append(reason)
                if reason.startswith("link_deleted:vh1"):
                    return

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.2)  # let the socket bind
        proc = await asyncio.create_subprocess_exec("ip", "-n", env.host_name, "link", "set", "br-t", "down")
        await proc.wait()
        proc = await asyncio.create_subprocess_exec("ip", "-n", env.host_name, "link", "del", "vh1")
        await proc.wait()
        await asyncio.wait_for(task, 5)
        await gen.aclose()
        return seen

    seen = env.run(body)
    assert "link_down:br-t" in seen
    assert "link_deleted:vh1" in seen


def test_events_overrun_yields_resync(env: Env) -> None:
    async def body(k: Kernel) -> list[str]:
        gen = link_events(rcvbuf=4096)
        first = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.2)  # bound and waiting
        batch = "".join(f"link add ovr{i} type bridge\n" for i in range(200))
        # block the loop while the kernel queues 200+ notifications into a 4 KiB buffer
        subprocess.run(["ip", "-n", env.host_name, "-batch", "-"], input=batch, text=True, check=True)
        seen = [await asyncio.wait_for(first, 5)]
        while "resync" not in seen:
            seen.append(await asyncio.wait_for(gen.__anext__(), 5))
        # after the resync the stream works again (on a new socket, bound on the next __anext__)
        nxt = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.2)
        proc = await asyncio.create_subprocess_exec("ip", "-n", env.host_name, "link", "del", "ovr7")
        await proc.wait()
        seen.append(await asyncio.wait_for(nxt, 5))
        while not seen[-1].startswith("link_deleted:ovr7"):
            seen.append(await asyncio.wait_for(gen.__anext__(), 5))
        await gen.aclose()
        return seen

    seen = env.run(body)
    assert "resync" in seen
    assert seen[-1] == "link_deleted:ovr7"


def test_failed_create_leaves_nothing_behind(env: Env) -> None:
    async def body(k: Kernel) -> None:
        await k.ensure_bridge(bridge())
        await k.ensure_netns("c1")
        bad = replace(veth(env, 1), gateway4=IPv4Address("192.0.2.1"))  # not on the link: ENETUNREACH
        with pytest.raises(KernelError, match=r'peer "eth0" in .*c1: configure failed: Network is unreachable'):
            await k.ensure_veth(bad)
        assert [x["ifname"] for x in env.ip("link")] == ["lo", "br-t"]
        assert [x["ifname"] for x in nsip(env.ns("c1"), "link")] == ["lo"]
        await k.ensure_veth(veth(env, 1))  # and the good spec then works
        assert await k.peer_exists(veth(env, 1))

    env.run(body)


def test_netns_in_run_netns_works_with_iproute2(env: Env) -> None:
    """With netns_dir=/run/netns the namespace is a normal named netns: ``ip netns exec`` sees it."""
    name = f"{env.host_name}-ip"
    box: dict[str, Any] = {}

    async def body(_: Kernel) -> None:
        k = Kernel(Path("/run/netns"))
        try:
            assert await k.ensure_netns(name) is True
            box["list"] = sh("ip", "netns", "list").stdout
            box["links"] = sh("ip", "netns", "exec", name, "ip", "-o", "link").stdout
            await k.remove_netns(name)
        finally:
            await k.close()
            sh("ip", "netns", "del", name, check=False)

    env.run(body)
    assert name in box["list"]
    assert "lo:" in box["links"] and "UP" in box["links"]
    assert name not in sh("ip", "netns", "list").stdout
    assert f"/run/netns/{name}" not in mountpoints()
