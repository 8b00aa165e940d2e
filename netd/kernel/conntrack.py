"""Conntrack flushes for published UDP ports, over ctnetlink (pyroute2 ``AsyncConntrack``; no ``conntrack`` tool).

A UDP "connection" lives on in conntrack as long as packets keep coming: when a published UDP port is removed
or points somewhere else, the existing entry keeps steering (or not steering) the flow, and a client that never
pauses is black-holed.  Docker still has that bug.  netd deletes the entries whose original destination is the
mapping's host address and port after each firewall change that adds, removes or changes a UDP mapping.

Runs in the daemon's network namespace (the socket is opened by the calling thread).  One filtered dump per
address family (the kernel filters on protocol), then a delete per matching entry.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address

import structlog
from pyroute2.conntrack import AsyncConntrack, NFCTAttrTuple
from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError

log = structlog.get_logger()

_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


@dataclass(frozen=True)
class UdpTarget:
    """Entries to forget: UDP to ``host_ip`` (None: any address of the family) port ``port``."""

    version: int
    host_ip: str | None
    port: int


async def flush_udp(targets: Iterable[UdpTarget]) -> int:
    """Delete the conntrack entries of ``targets``; returns how many went.  Entries that vanish meanwhile are
    not an error."""
    by_version: dict[int, list[UdpTarget]] = {}
    for t in targets:
        by_version.setdefault(t.version, []).append(t)
    deleted = 0
    for version, wanted in sorted(by_version.items()):
        any_addr = {t.port for t in wanted if t.host_ip is None}
        exact = {(ip_address(t.host_ip), t.port) for t in wanted if t.host_ip is not None}
        fam = _FAMILY[version]
        try:
            async with AsyncConntrack(nfgen_family=fam) as ct:
                flt = NFCTAttrTuple(family=fam, proto=socket.IPPROTO_UDP)
                doomed = []
                async for entry in await ct.dump_entries(tuple_orig=flt):
                    orig = entry.tuple_orig
                    if orig.proto != socket.IPPROTO_UDP or orig.dport is None:
                        continue
                    if orig.dport in any_addr or (ip_address(orig.daddr), orig.dport) in exact:
                        doomed.append(entry)
                for entry in doomed:
                    try:
                        await ct.delete(entry)
                        deleted += 1
                    except NetlinkError as e:
                        if e.code != 2:  # ENOENT: it timed out meanwhile
                            raise
        except (NetlinkError, OSError) as e:
            raise KernelError(
                f"conntrack: flushing UDP entries of published ports failed ({e}); check that nf_conntrack is "
                "loaded, or delete them with `conntrack -D -p udp --dport PORT`"
            ) from e
    if deleted:
        log.info("conntrack_flushed", entries=deleted, targets=sum(len(v) for v in by_version.values()))
    return deleted
