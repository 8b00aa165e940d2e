"""A new veth, in one job of a namespace worker (``nsworker``): the create (the peer made in the namespace,
the host side on the bridge), the host side read back (its IFLA_LINK is the peer's index), the namespace side
(addresses, up with netd's alias, default routes: one datagram), the host side up with its alias (the last
request of a create: what lacks it is half-built), then the announce of the addresses the driver names
(``VethSpec.announce``, ``netd.kernel.announce``).

A connect used to make eight trips between the event loop and the kernel or a thread for this (pyroute2's
create, a read back, a thread to open a pyroute2 socket in the namespace, its batch, the host side's request,
a thread to announce), each a wake-up of the loop, and the kernel built the pair inside the loop thread's
``sendmsg``.  Here one job does it with raw requests (``rtwrite``) on two blocking sockets: one opened in
netd's namespace before the worker enters the endpoint's, one inside it.  The result goes back as soon as the
frames are sent; the sockets (an AF_PACKET one's close waits for an RCU grace period) are closed afterwards by
the workers' closer thread, off the connect's path.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable

from netd.core.errors import KernelError
from netd.core.linkspec import VethSpec, owner_alias
from netd.kernel import rtwrite
from netd.kernel.announce import send_frames
from netd.kernel.netns import open_netns, setns_net
from netd.kernel.nlerror import kernel_error
from netd.kernel.nsworker import WORKERS_POOL


def _create(spec: VethSpec, bridge_index: int, announce: bool, opened: list[socket.socket]) -> int:
    """Blocking, in a namespace worker (it starts in netd's namespace and goes back there after).  Returns
    the frames sent (-1: the announce failed; the endpoint works without it).  A create that fails raises
    KernelOpError with its errno (EEXIST: the caller looks at what has the name); a failure after it deletes
    the host side (the peer goes with it) before raising: a half-configured pair would pass the next check."""
    obj = f'veth "{spec.host_ifname}"'
    host = rtwrite.route_socket()
    opened.append(host)
    try:
        nsfd = open_netns(spec.netns.path)  # never blocks on a FIFO put in its place
    except OSError as exc:
        raise kernel_error(
            f"{obj}: netns {spec.netns.path}", "open", exc, "the namespace does not exist (any more)"
        ) from exc
    try:
        create = rtwrite.new_veth(spec.host_ifname, spec.peer_ifname, nsfd, bridge_index, spec.mac, spec.mtu)
        (err,) = rtwrite.transact(host, [create])
    finally:
        os.close(nsfd)
    if err is not None:
        raise kernel_error(obj, f"create (peer {spec.peer_ifname} in {spec.netns.path})", err)
    try:
        # the host side's IFLA_LINK is the peer's ifindex inside the target netns: no lookup there
        ((err, created),) = rtwrite.exchange(host, [rtwrite.get_link(spec.host_ifname)])
        if created is None or created.link_index is None:
            raise KernelError(f"{obj}: vanished right after it was created; another tool is deleting it")
        return _finish(spec, host, created.index, created.link_index, announce, opened)
    except BaseException:
        with contextlib.suppress(OSError):
            rtwrite.transact(host, [rtwrite.del_link(spec.host_ifname)])
        raise


def _finish(
    spec: VethSpec,
    host: socket.socket,
    host_index: int,
    peer_index: int,
    announce: bool,
    opened: list[socket.socket],
) -> int:
    where = f'peer "{spec.peer_ifname}" in {spec.netns.path}'
    try:
        setns_net(spec.netns.path)  # this worker only; it goes back after the job
    except OSError as exc:
        raise kernel_error(
            f"netns {spec.netns.path}", "enter", exc, "the namespace does not exist (any more)"
        ) from exc
    ns = rtwrite.route_socket()
    opened.append(ns)
    # in the kernel's order: (no IPv6 on a network without it) addresses, up (the alias marks the peer as
    # netd's), then the routes via the gateways; the first is best effort
    quiet = [rtwrite.no_ipv6_addresses(peer_index)] if spec.ipv6_off else []
    msgs = [*quiet, *(rtwrite.add_address(peer_index, a) for a in spec.addresses)]
    msgs.append(rtwrite.set_up(peer_index, owner_alias(spec.owner)))
    msgs += [rtwrite.replace_default_route(peer_index, gw) for gw in (spec.gateway4, spec.gateway6) if gw]
    addrs = range(len(quiet), len(quiet) + len(spec.addresses))
    for i, err in enumerate(rtwrite.transact(ns, msgs)):
        if err is not None and i >= len(quiet) and not (i in addrs and rtwrite.is_eexist(err)):
            raise kernel_error(where, "configure", err)
    # the host side (a bridge port: never any IPv6 address) up with its alias, then (announcing) read back: its
    # link-watch work (carrier, the bridge port) is done first
    sync = [rtwrite.get_link(spec.host_ifname)] if announce and spec.announce else []
    up = [rtwrite.no_ipv6_addresses(host_index), rtwrite.set_up(host_index, owner_alias(spec.owner)), *sync]
    err = rtwrite.transact(host, up)[1]
    if err is not None:
        raise kernel_error(f'veth "{spec.host_ifname}"', "bring up", err)
    if not sync:
        return 0
    try:
        rtwrite.transact(ns, [rtwrite.get_link(spec.peer_ifname)])  # the peer's link-watch work (its qdisc)
        return send_frames(spec.peer_ifname, peer_index, spec.announce, opened)
    except OSError:
        return -1


def _close_all(opened: list[socket.socket]) -> Callable[[], None]:
    def close() -> None:
        for sock in opened:
            sock.close()

    return close


async def create_veth(spec: VethSpec, bridge_index: int, announce: bool = True) -> int:
    """Create the veth on the bridge with its peer in the namespace, configure both sides and (``announce``)
    announce it: one worker job.  Returns the frames sent (-1: the announce failed).  Raises KernelOpError
    (a create refused with EEXIST: nothing was made; any later failure: the pair was deleted again)."""
    opened: list[socket.socket] = []
    return await WORKERS_POOL.run(lambda: _create(spec, bridge_index, announce, opened), after=_close_all(opened))
