"""Conntrack flushes for load-balanced backends that went away (pyroute2 ``AsyncConntrack``, no tool).

A DNAT'd connection keeps its backend for its conntrack lifetime: a UDP flow that never pauses would stay
pinned to a task that is gone, and a TCP client would wait for retransmission timeouts.  After the LB rules stop
choosing a backend, netd deletes every DNAT'd entry whose reply comes from that backend's ``address:port``
(``tuple_reply`` source: after DNAT the reply tuple starts at the backend).  The next packet of the flow is
then "new" again, walks the nat chains and reaches a live backend (UDP moves over; TCP gets a quick RST from
the new backend instead of hanging).  Entries not made by a DNAT (direct traffic to the task) are left alone.

Runs in the calling thread's network namespace (the netlink socket is opened there).  It lives beside the LB
rules rather than in ``netd/kernel/`` because it is part of applying an LB change (``lb.py`` calls it after the
rules stop choosing the backend, in the same worker thread and namespace), and the firewall layer imports
nothing of the kernel layer.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address

import structlog
from pyroute2.conntrack import AsyncConntrack, NFCTAttrTuple
from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError

log = structlog.get_logger()

IPS_DST_NAT = 0x20
_PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


@dataclass(frozen=True)
class BackendTarget:
    address: IPv4Address
    proto: str  # "tcp" | "udp"
    port: int


async def flush_backends(targets: Iterable[BackendTarget]) -> int:
    """Delete the DNAT'd conntrack entries whose reply source is one of ``targets``; returns how many went."""
    by_proto: dict[int, set[tuple[IPv4Address, int]]] = {}
    for t in targets:
        by_proto.setdefault(_PROTO[t.proto], set()).add((t.address, t.port))
    deleted = 0
    try:
        async with AsyncConntrack(nfgen_family=socket.AF_INET) as ct:
            for proto, wanted in sorted(by_proto.items()):
                doomed = []
                flt = NFCTAttrTuple(family=socket.AF_INET, proto=proto)
                async for entry in await ct.dump_entries(tuple_orig=flt):
                    reply = entry.tuple_reply
                    if not (entry.status or 0) & IPS_DST_NAT or reply.saddr is None or reply.sport is None:
                        continue
                    if (ip_address(reply.saddr), reply.sport) in wanted:
                        doomed.append(entry)
                for entry in doomed:
                    try:
                        await ct.delete(entry)
                        deleted += 1
                    except NetlinkError as e:
                        if e.code != 2:  # ENOENT: it went meanwhile
                            raise
    except (NetlinkError, OSError) as e:
        raise KernelError(
            f"conntrack: flushing the connections of removed service backends failed ({e}); check that "
            "nf_conntrack is loaded, or delete them with `conntrack -D --reply-src ADDRESS`"
        ) from e
    if deleted:
        log.info("lb_conntrack_flushed", entries=deleted, backends=sum(len(v) for v in by_proto.values()))
    return deleted
