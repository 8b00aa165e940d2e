"""The rest of a new veth once it exists, in one job of a namespace worker (``nsworker``): the namespace
side (addresses, up with netd's alias, default routes: one datagram), the host side up with its alias (the last
request of a create: what lacks it is half-built), then the announce of the endpoint's addresses
(``netd.kernel.announce``).

A connect used to make four trips between the event loop and the kernel or a thread for this (a thread to
open a pyroute2 socket in the namespace, its batch, the host side's request, a thread to announce), each a
wake-up of the loop and pyroute2's encoding.  Here one job does it with raw requests (``rtwrite``) on two
blocking sockets: one opened in netd's namespace before the worker enters the endpoint's, one inside it.  The
result goes back as soon as the frames are sent; the sockets (an AF_PACKET one's close waits for an RCU grace
period) are closed afterwards by the workers' closer thread, off the connect's path.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from netd.core.linkspec import VethSpec, owner_alias
from netd.kernel import rtwrite
from netd.kernel.announce import send_frames
from netd.kernel.netns import setns_net
from netd.kernel.nlerror import kernel_error
from netd.kernel.nsworker import WORKERS_POOL
from netd.kernel.sysctl import disable_ipv6


def _finish(spec: VethSpec, host_index: int, peer_index: int, announce: bool, opened: list[socket.socket]) -> int:
    """Blocking, in a namespace worker (it starts in netd's namespace and goes back there after).  Returns
    the frames sent (-1: the announce failed; the endpoint works without it)."""
    where = f'peer "{spec.peer_ifname}" in {spec.netns.path}'
    disable_ipv6(spec.host_ifname)  # still in netd's namespace (its /proc/sys/net); before the host side is up
    host = rtwrite.route_socket()
    opened.append(host)
    try:
        setns_net(spec.netns.path)  # this worker only; it goes back after the job
    except OSError as exc:
        raise kernel_error(
            f"netns {spec.netns.path}", "enter", exc, "the namespace does not exist (any more)"
        ) from exc
    ns = rtwrite.route_socket()
    opened.append(ns)
    # in the kernel's order: addresses, up (the alias marks the peer as netd's), then the routes via the gateways
    msgs = [rtwrite.add_address(peer_index, a) for a in spec.addresses]
    msgs.append(rtwrite.set_up(peer_index, owner_alias(spec.owner)))
    msgs += [rtwrite.replace_default_route(peer_index, gw) for gw in (spec.gateway4, spec.gateway6) if gw]
    for i, err in enumerate(rtwrite.transact(ns, msgs)):
        if err is not None and not (i < len(spec.addresses) and rtwrite.is_eexist(err)):
            raise kernel_error(where, "configure", err)
    (err,) = rtwrite.transact(host, [rtwrite.set_up(host_index, owner_alias(spec.owner))])
    if err is not None:
        raise kernel_error(f'veth "{spec.host_ifname}"', "bring up", err)
    if not spec.addresses or not announce:
        return 0
    try:
        # both ends' link-watch work done first (carrier, the peer's qdisc, the bridge port): else dropped
        rtwrite.transact(host, [rtwrite.get_link(spec.host_ifname)])
        rtwrite.transact(ns, [rtwrite.get_link(spec.peer_ifname)])
        return send_frames(spec.peer_ifname, peer_index, spec.addresses, opened)
    except OSError:
        return -1


def _close_all(opened: list[socket.socket]) -> Callable[[], None]:
    def close() -> None:
        for sock in opened:
            sock.close()

    return close


async def finish_veth(spec: VethSpec, host_index: int, peer_index: int, announce: bool = True) -> int:
    """Configure both sides of a just-created veth and (``announce``) announce it; the frames sent (-1: the
    announce failed).  Raises KernelError (the caller deletes the half-built pair)."""
    opened: list[socket.socket] = []
    return await WORKERS_POOL.run(
        lambda: _finish(spec, host_index, peer_index, announce, opened), after=_close_all(opened)
    )
