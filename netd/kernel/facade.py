"""The kernel facade (``Kernel``): the one typed interface the engine uses for links, addresses, routes, netns
(and netd's ownership markers), sysctls, conntrack, VXLAN entries and link events.  One AsyncIPRoute per
network namespace, cached for one reconcile only.

``Kernel`` is assembled here from one part per purpose, each in a module of its own: its sockets, the daemon's
and the endpoints' (``facade_sockets``, where why a socket into a namespace lives only for one pass is told),
network namespaces (``facade_netns``), links (``facade_links``) and the overlay, VXLAN and IPsec
(``facade_overlay``).  Callers import only ``netd.kernel.facade.Kernel``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncGenerator, Iterable
from pathlib import Path

from netd.core.linkspec import NsRef
from netd.kernel import conntrack
from netd.kernel import sysctl as sysctlops
from netd.kernel.events import link_events
from netd.kernel.facade_links import KernelLinks
from netd.kernel.facade_netns import KernelNetns
from netd.kernel.facade_overlay import KernelOverlay


class Kernel(KernelNetns, KernelOverlay, KernelLinks):
    """Effects on the kernel, all idempotent.  Works on the netns of the thread running the event loop."""

    def __init__(self, netns_dir: Path, host_mount_namespace: str = "", owned_dir: Path | None = None) -> None:
        self.netns_dir = Path(netns_dir)
        self.owned_dir = owned_dir if owned_dir is not None else self.netns_dir.parent / "netns-owned"
        self.host_mnt = host_mount_namespace  # bind-mount named netns from there (see kernel.mountns)
        # The reconciler's socket.  A netlink socket serves one dump at a time and answers a second with EBUSY,
        # so the reads made beside a reconcile (observe, host_prefixes) open a socket of their own per call.
        self._host = None
        self._opening = asyncio.Lock()
        self._ns = OrderedDict()
        self._bridges = {}  # bridge name -> ifindex, refreshed by ensure_bridge
        self._kinds = set()  # link kinds this kernel was found to support (a missing one is asked again)
        self._dir_ready = False  # netns_dir checked to be a shared mount (once per process)
        self._dir_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------------ sysctl

    async def set_sysctl(self, key: str, value: str, ns: NsRef | None = None) -> None:
        await sysctlops.set_sysctl(key, value, ns)

    async def get_sysctl(self, key: str, ns: NsRef | None = None) -> str:
        return await sysctlops.get_sysctl(key, ns)

    # ------------------------------------------------------------------------------------------ conntrack

    async def flush_udp_conntrack(self, udp: Iterable[tuple[int, str | None, int]]) -> int:
        """Forget the UDP conntrack entries to (IP version, host address or None: any, port)."""
        return await conntrack.flush_udp(conntrack.UdpTarget(v, ip, port) for v, ip, port in udp)

    # ------------------------------------------------------------------------------------------ events

    async def events(self) -> AsyncGenerator[str, None]:
        async for reason in link_events():
            yield reason
