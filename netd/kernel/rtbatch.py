"""Many rtnetlink requests per datagram, each acked, on a raw socket of the calling thread's namespace.

Used for a VXLAN device's FDB/neighbour entries (thousands: ``vxlan.write_entries``) and for the group mark of
the links a batched removal deletes (``teardown``): pyroute2 costs ~0.5 ms of Python per request even batched,
a raw request ~40 us (bench/vxlan_entries.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Collection, Sequence

from netd.kernel.nlerror import kernel_error
from netd.kernel.rtraw import NLMSG_ERROR, error_of, messages
from netd.kernel.rtsock import RECV_SIZE, SOL_NETLINK, RouteSocket

# Requests per datagram (bench/vxlan_entries.py): each is acked, and the acks of one datagram must fit the
# socket's receive buffer (see _grow_rcvbuf).
BATCH = 256
RCVBUF = 1 << 20
ACK_BUFFER = 1024  # receive buffer to allow per ack (~770 measured), with a margin
SO_RCVBUFFORCE = 33
NETLINK_CAP_ACK = 10
Build = Callable[[int], bytes]  # a request for a sequence number


def _grow_rcvbuf(sock: socket.socket) -> int:
    """Room for a whole batch's acks: the kernel handles a datagram's requests before netd reads an answer,
    and an ack that does not fit is dropped (the socket overruns, ENOBUFS).  Returns the batch size that fits:
    an ack takes ~770 bytes of buffer (measured: 256 fit in 208 KiB, 512 did not)."""
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # an error does not echo the request
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except PermissionError:  # without CAP_NET_ADMIN: up to net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    return max(1, min(BATCH, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // ACK_BUFFER))


async def write(obj: str, reqs: Sequence[tuple[Build, str]], action: str, missing: Collection[int]) -> None:
    """Send the requests ``reqs`` (builder of the message for a sequence number, what it is) in datagrams of up
    to BATCH; every one is acked, the first error is raised (the errnos in ``missing`` ignored).  ``obj`` names
    the object in errors."""
    if not reqs:
        return
    loop = asyncio.get_running_loop()
    with RouteSocket() as rs:
        batch = _grow_rcvbuf(rs.sock)
        for start in range(0, len(reqs), batch):
            chunk = reqs[start : start + batch]
            first = rs.seq + 1
            rs.seq += len(chunk)
            try:
                await loop.sock_sendall(rs.sock, b"".join(build(first + i) for i, (build, _) in enumerate(chunk)))
                pending = len(chunk)
                while pending:
                    data = await loop.sock_recv(rs.sock, RECV_SIZE)
                    for msg in messages(data):
                        i = msg.seq - first
                        if msg.type != NLMSG_ERROR or not 0 <= i < len(chunk):
                            continue
                        pending -= 1
                        err = error_of(data, msg.start, chunk[i][1])
                        if err is not None and err.errno not in missing:
                            raise kernel_error(f"{obj}: {chunk[i][1]}", action, err)
            except OSError as exc:  # the socket itself (ENOBUFS: acks lost)
                raise kernel_error(obj, f"{action} entries", exc, "retry; a reconcile writes them again") from exc
