"""A fake upstream DNS server for the resolver tests (run inside a test namespace: ``python dnsfake.py IP PORT``).

Answers ``*.example.test`` A queries with 192.0.2.<len(first label)>, ``big.example.test`` with 100 A records
(too big for plain UDP: the client must retry over TCP), everything else NXDOMAIN.  UDP and TCP.  Prints
"ready" once both sockets listen; each query's name goes to stderr.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


def respond(data: bytes, tcp: bool) -> bytes:
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    name = q.question[0].name
    text = name.to_text(omit_final_dot=True).lower()
    print(text, file=sys.stderr, flush=True)
    if q.question[0].rdtype == dns.rdatatype.A and text == "big.example.test":
        addrs = [f"198.51.100.{i}" for i in range(1, 101)]
        r.answer.append(dns.rrset.from_text_list(name, 30, "IN", "A", addrs))
    elif q.question[0].rdtype == dns.rdatatype.A and text.endswith(".example.test"):
        r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", f"192.0.2.{len(text.split('.')[0])}"))
    elif not text.endswith(".example.test"):
        r.set_rcode(dns.rcode.NXDOMAIN)
    limit = 65535 if tcp else max(512, q.payload if q.edns >= 0 else 512)
    return r.to_wire(max_size=limit, prefer_truncation=True)


class Udp(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(respond(data, tcp=False), addr)


async def tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
            out = respond(await reader.readexactly(n), tcp=True)
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()


async def main(ip: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Udp, local_addr=(ip, port))
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
    server = await asyncio.start_server(tcp_client, ip, port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
