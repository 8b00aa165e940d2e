"""DNS load client for the resolver tests and bench/dns_qps.py (run inside an endpoint namespace via nsenter).

    python dnsload.py SERVER --names a,b --count 500 --concurrency 500 [--seconds S] [--timeout T]

Sends A queries for the names in turn (``--count`` queries, or as many as fit in ``--seconds``) from
``--concurrency`` workers, each with its own UDP socket and one query in flight, one try, ``--timeout`` s.
Prints one JSON object: sent, answered, lost (no answer in time), rcodes (count per rcode), answers (name ->
addresses seen), latencies_ms (sorted), elapsed_s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from collections import Counter
from typing import Any

import dns.message
import dns.rcode


async def run(args: argparse.Namespace) -> dict[str, Any]:
    names = args.names.split(",")
    rcodes: Counter[str] = Counter()
    answers: dict[str, set[str]] = {n: set() for n in names}
    lat: list[float] = []
    lost = 0
    sent = 0
    deadline = time.monotonic() + args.seconds if args.seconds else None
    loop = asyncio.get_running_loop()

    def more() -> bool:
        return sent < args.count if deadline is None else time.monotonic() < deadline

    async def worker() -> None:
        """One connected UDP socket (its own source port), one query in flight at a time."""
        nonlocal lost, sent
        with socket.socket(socket.AF_INET6 if ":" in args.server else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.connect((args.server, 53))
            while more():
                name = names[sent % len(names)]
                sent += 1
                q = dns.message.make_query(name, "A")
                t0 = time.perf_counter()
                await loop.sock_sendall(s, q.to_wire())
                try:
                    r = await asyncio.wait_for(_reply(loop, s, q), args.timeout)
                except (TimeoutError, OSError):
                    lost += 1
                    continue
                lat.append((time.perf_counter() - t0) * 1000)
                rcodes[dns.rcode.to_text(r.rcode())] += 1
                for rrset in r.answer:
                    answers[name].update(rd.to_text() for rd in rrset)

    t_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return {
        "sent": sent,
        "answered": len(lat),
        "lost": lost,
        "rcodes": dict(rcodes),
        "answers": {k: sorted(v) for k, v in answers.items()},
        "latencies_ms": sorted(round(x, 3) for x in lat),
        "elapsed_s": round(time.perf_counter() - t_start, 3),
    }


async def _reply(loop: asyncio.AbstractEventLoop, s: socket.socket, q: dns.message.Message) -> dns.message.Message:
    """The answer to ``q`` (a late answer to an earlier, timed-out query on this socket is skipped)."""
    while True:
        r = dns.message.from_wire(await loop.sock_recv(s, 65535))
        if q.is_response(r):
            return r


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("server")
    p.add_argument("--names", required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--timeout", type=float, default=3.0)
    print(json.dumps(asyncio.run(run(p.parse_args()))))


if __name__ == "__main__":
    main()
