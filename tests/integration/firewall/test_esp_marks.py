"""``table inet netd_esp`` (encrypted overlays' mark and guard rules) on the real nftables, in a throw-away
namespace: applied whole, replaced whole, removed when no encrypted network is left; nothing else touched."""

from __future__ import annotations

import asyncio
import secrets
import threading
from ipaddress import IPv4Address

from netdtest import in_ns, sh

from netd.firewall.esp_marks import EspGuard, EspMarks
from netd.kernel.netns import setns_net


def _in_ns(path: str, fn) -> None:  # type: ignore[no-untyped-def]
    box: list[BaseException] = []

    def run() -> None:
        try:
            setns_net(path)
            fn()
        except BaseException as e:
            box.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if box:
        raise box[0]


def test_guard_table_applied_replaced_and_removed() -> None:
    name = f"ndt-esp-{secrets.token_hex(3)}"
    path = f"/run/netns/{name}"
    sh("ip", "netns", "add", name)
    try:
        in_ns(path, "nft", "add", "table", "inet", "foreign")  # someone else's table stays as it is
        marks: list[EspMarks] = []

        def go() -> None:
            async def steps() -> None:
                m = EspMarks()
                marks.append(m)
                a, b = IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3")
                assert await m.apply([EspGuard(4097, (a,))], 4789)
                assert not await m.apply([EspGuard(4097, (a,))], 4789)  # unchanged: nothing sent
                listed = in_ns(path, "nft", "list", "table", "inet", "netd_esp").stdout
                assert "10.0.0.2" in listed and "meta mark set 0x6e001001" in listed, listed
                assert "ipsec missing drop" in listed and "ip daddr != @peers_4097 drop" in listed, listed
                assert await m.apply([EspGuard(4097, (b,)), EspGuard(4098, ())], 4789)
                listed = in_ns(path, "nft", "list", "table", "inet", "netd_esp").stdout
                assert "10.0.0.2" not in listed and "10.0.0.3" in listed and "peers_4098" in listed, listed
                in_ns(path, "nft", "delete", "table", "inet", "netd_esp")  # drift: a forced pass puts it back
                assert await m.apply([EspGuard(4097, (b,)), EspGuard(4098, ())], 4789, force=True)
                assert "10.0.0.3" in in_ns(path, "nft", "list", "table", "inet", "netd_esp").stdout
                assert await m.apply([], 4789)
                m.close()

            asyncio.run(steps())

        _in_ns(path, go)
        tables = in_ns(path, "nft", "list", "tables").stdout
        assert "netd_esp" not in tables and "inet foreign" in tables, tables
    finally:
        sh("ip", "netns", "del", name, check=False)
