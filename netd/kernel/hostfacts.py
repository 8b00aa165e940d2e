"""Read what ``netd-ctl doctor`` needs from the kernel of netd's namespace (read-only, on demand).

sysctls from /proc/sys, routes and links over netlink (pyroute2), other tools' forward chains from the nftables
ruleset (libnftables JSON; iptables-nft rules show up there too).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from ipaddress import ip_network
from typing import Any

from pyroute2.iproute.linux import AsyncIPRoute

from netd.core.facts import Facts, ForwardChain
from netd.kernel.observe import decode_link

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
    "net.bridge.bridge-nf-call-iptables",
)
RT_TABLE_MAIN = 254
OWN_TABLES = {"netd"}


def read_sysctls() -> dict[str, str]:
    out = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError), open("/proc/sys/" + key.replace(".", "/"), encoding="ascii") as f:
            out[key] = f.read().strip()
    return out


def forward_chains(ruleset: Any) -> tuple[list[ForwardChain], list[str]]:
    """Base chains on the forward hook and the tables of other tools, from ``nft -j list chains`` output."""
    chains: list[ForwardChain] = []
    tables: set[str] = set()
    for item in ruleset.get("nftables", []) if isinstance(ruleset, dict) else []:
        chain = item.get("chain") if isinstance(item, dict) else None
        if not isinstance(chain, dict) or chain.get("table") in OWN_TABLES:
            continue
        tables.add(f"{chain.get('family')} {chain.get('table')}")
        if chain.get("hook") == "forward" and chain.get("family") in ("ip", "ip6", "inet"):
            chains.append(
                ForwardChain(chain["family"], chain["table"], chain["name"], chain.get("policy", "accept"))
            )
    return chains, sorted(tables)


def _nft_chains() -> Any:
    try:
        import nftables  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return {}
    nft = nftables.Nftables()
    nft.set_json_output(True)
    rc, out, _err = nft.cmd("list chains")
    return json.loads(out) if rc == 0 and out else {}


async def gather(facts: Facts) -> Facts:
    """Fill ``facts`` with what the kernel says (the caller sets the reconciler's fields)."""
    facts.sysctls = read_sysctls()
    facts.br_netfilter = os.path.isdir("/proc/sys/net/bridge")
    with contextlib.suppress(Exception):
        facts.forward_chains, facts.foreign_tables = forward_chains(_nft_chains())
    ipr = AsyncIPRoute()
    try:
        await ipr.setup_endpoint()
        links = {int(m["index"]): decode_link(m) async for m in await ipr.link("dump")}
        has_global: set[int] = set()
        async for m in await ipr.addr("dump"):
            if m["scope"] == 0 and not str(m.get_attr("IFA_ADDRESS") or "").startswith("127."):
                has_global.add(int(m["index"]))
        for family in (socket.AF_INET, socket.AF_INET6):
            async for r in await ipr.route("dump", family=family):
                table = r.get_attr("RTA_TABLE") or r["table"]
                dev = links.get(int(r.get_attr("RTA_OIF") or 0))
                if table != RT_TABLE_MAIN or dev is None:
                    continue
                dst = r.get_attr("RTA_DST")
                if not dst:
                    if family == socket.AF_INET and r["dst_len"] == 0:
                        facts.default_dev = dev.ifname
                    continue
                facts.routes.append((ip_network(f"{dst}/{r['dst_len']}", strict=False), dev.ifname))
    finally:
        ipr.close()
    facts.link_mtu = {link.ifname: link.mtu for link in links.values()}
    facts.global_links = sorted(
        link.ifname
        for idx, link in links.items()
        if idx in has_global and link.owner is None and link.kind != "loopback"
    )
    return facts
