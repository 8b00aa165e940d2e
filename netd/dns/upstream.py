"""Forwarding what a network's resolver does not know to the upstream resolvers, with Docker-like failover.

Upstreams are the config's ``dns`` list, or else the host's ``/etc/resolv.conf`` nameservers read at start
(loopback stubs such as systemd-resolved's 127.0.0.53 are skipped: they are not reachable from the
namespaces' point of view and would loop).  Each upstream gets ``timeout`` seconds; a timeout, a network error,
SERVFAIL or REFUSED moves on to the next one; when all failed the client gets SERVFAIL.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from netd.core.model import IPAddress
from netd.dns.answer import reply
from netd.dns.resolvconf import HostResolv

TYPE_CHECKING = False
if TYPE_CHECKING:
    import dns.asyncquery
    import dns.exception
    import dns.message
    import dns.rcode
else:
    from netd.dns.lazy import dns

log = structlog.get_logger()

TIMEOUT = 2.0  # seconds per upstream
MAX_INFLIGHT = 1024  # concurrent forwarded queries (Docker's limit too); beyond it: SERVFAIL at once


def choose_upstreams(configured: Sequence[IPAddress], host: HostResolv) -> list[IPAddress]:
    """The config's ``dns`` list, else the host's nameservers without loopback stubs (each skip is logged)."""
    if configured:
        return list(configured)
    out: list[IPAddress] = []
    for ns in host.nameservers:
        if ns.is_loopback:
            log.info(
                "dns_upstream_skipped",
                nameserver=str(ns),
                reason="loopback stub resolver; set dns = [...] in the config to forward elsewhere",
            )
            continue
        out.append(ns)
    if not out:
        log.warning("dns_no_upstream", hint="external names will get SERVFAIL; set dns = [...] in the config")
    return out


class Forwarder:
    def __init__(self, upstreams: Sequence[IPAddress], timeout: float = TIMEOUT) -> None:
        self.upstreams = list(upstreams)
        self.timeout = timeout
        self.inflight = 0
        self.forwarded = 0
        self.failed = 0

    async def resolve(self, query: dns.message.Message, tcp: bool) -> dns.message.Message:
        """The upstream answer for ``query`` (UDP may come back truncated: the client then asks over TCP)."""
        if self.inflight >= MAX_INFLIGHT:
            self.failed += 1
            return reply(query, dns.rcode.SERVFAIL)
        self.inflight += 1
        self.forwarded += 1
        try:
            last: dns.message.Message | None = None
            for ns in list(self.upstreams):
                try:
                    if tcp:
                        r = await dns.asyncquery.tcp(query, str(ns), timeout=self.timeout)
                    else:
                        r = await dns.asyncquery.udp(query, str(ns), timeout=self.timeout, ignore_unexpected=True)
                except (dns.exception.DNSException, OSError, EOFError) as e:
                    log.debug("dns_upstream_failed", upstream=str(ns), error=type(e).__name__, detail=str(e))
                    continue
                if r.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
                    last = r
                    continue
                return r
            self.failed += 1
            return last if last is not None else reply(query, dns.rcode.SERVFAIL)
        finally:
            self.inflight -= 1
