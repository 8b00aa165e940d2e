"""The kernel facade's network namespaces (part of ``netd.kernel.facade.Kernel``): names and paths, what a path
is, create and remove (in a fresh thread: they ``setns()``/``unshare()``), and netd's ownership markers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import structlog

from netd.core.errors import KernelError
from netd.core.linkspec import NsProbe
from netd.kernel import netns as nsops
from netd.kernel import nsid as nsidops
from netd.kernel import owned
from netd.kernel.facade_sockets import KernelSockets
from netd.kernel.nlerror import kernel_error

log = structlog.get_logger()


class KernelNetns(KernelSockets):
    """The namespace operations of ``Kernel`` (which sets these attributes up in its ``__init__``)."""

    netns_dir: Path
    owned_dir: Path
    host_mnt: str
    _dir_ready: bool
    _dir_lock: asyncio.Lock

    def netns_path(self, name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise KernelError(f'netns "{name}": not a valid name; use letters, digits, "-", "_" and "."')
        return str(self.netns_dir / name)

    @staticmethod
    def ns_alive(path: str) -> bool:
        return nsops.ns_alive(path)

    @staticmethod
    def ns_identity(path: str) -> int | None:
        """The inode of the live network namespace at ``path`` (None if there is none): a reused PID's
        /proc/PID/ns/net names another namespace and has another inode.  Never blocks (see netns.open_netns)."""
        found = nsops.probe(path)
        return found.ident[1] if found.ident is not None else None

    @staticmethod
    def ns_probe(path: str) -> NsProbe:
        """What ``path`` is (a live network namespace, netd's own, a FIFO...), without blocking."""
        return nsops.probe(path)

    async def ns_has_link(self, path: str, ifname: str) -> bool:
        """Whether the namespace at ``path`` has a link of that name (netd's or anyone's).  A validation read
        beside a reconcile: asked from netd's namespace by the namespace's id (``netd.kernel.nsid``), on a
        raw socket of its own (the reconciler's could be in a dump (EBUSY); a socket inside the namespace needs
        a thread, and a cached one would keep the namespace alive after it is deleted)."""
        try:
            nsfd = nsops.open_netns(path)
        except OSError as exc:
            raise KernelError(f"netns {path}: open failed: the namespace does not exist (any more)") from exc
        try:
            return await nsidops.has_link(nsfd, ifname)
        except OSError as exc:
            raise kernel_error(f'link "{ifname}" in {path}', "get", exc) from exc
        finally:
            os.close(nsfd)

    async def ensure_netns(self, name: str, share: bool = False) -> bool:
        """``share``: the name is bound to netd's own namespace (``netns create --network host``)."""
        path = self.netns_path(name)
        if nsops.ns_alive(path):
            return False
        if not self._dir_ready:  # the first one makes the directory a shared mount: never two at once (waves)
            async with self._dir_lock:
                return await self._create_netns(name, path, share)
        return await self._create_netns(name, path, share)

    async def _create_netns(self, name: str, path: str, share: bool) -> bool:
        netns_dir, prepare = str(self.netns_dir), not self._dir_ready
        try:
            created = await nsops.in_fresh_thread(
                lambda: nsops.create_named_netns(netns_dir, name, prepare, self.host_mnt, share), name="netd-nsadd"
            )
        except OSError as exc:
            raise kernel_error(f'netns "{name}"', "create", exc) from exc
        self._dir_ready = True
        if not created:
            return False
        log.info("netns_created", netns=name, path=path)
        return True

    def owned_netns(self, names: Collection[str] | None = None) -> set[str]:
        """The netns names netd marked as created by it (all, or among ``names``)."""
        return owned.owned_netns(self.owned_dir, names)

    def netns_foreign(self, name: str) -> str | None:
        """The path of a live namespace of that name netd did not make (no marker), else None."""
        path = self.netns_path(name)
        if (self.owned_dir / name).exists() or not self.ns_alive(path):
            return None
        return path

    def mark_netns(self, name: str, owned_by_netd: bool) -> None:
        owned.mark_netns(self.owned_dir, name, owned_by_netd)

    async def remove_netns(self, name: str) -> None:
        path = self.netns_path(name)
        self._drop(path)
        try:
            removed = await nsops.in_fresh_thread(
                lambda: nsops.remove_named_netns(path, self.host_mnt), name="netd-nsrm"
            )
        except OSError as exc:
            raise kernel_error(f'netns "{name}"', "remove", exc) from exc
        if removed:
            log.info("netns_removed", netns=name, path=path)

    async def remove_netns_many(self, names: Sequence[str]) -> dict[str, OSError | None]:
        """``remove_netns`` of each, all in one fresh thread (a batch of 1000 paid a thread start each);
        returns the error of each that failed (None: removed or already gone)."""
        paths = {name: self.netns_path(name) for name in names}
        for path in paths.values():
            self._drop(path)

        def run() -> dict[str, OSError | None]:
            out: dict[str, OSError | None] = {}
            for name, path in paths.items():
                try:
                    nsops.remove_named_netns(path, self.host_mnt)
                    out[name] = None
                except OSError as exc:
                    out[name] = exc
            return out

        results = await nsops.in_fresh_thread(run, name="netd-nsrm")
        log.info("netns_removed", count=sum(e is None for e in results.values()), batch=True)
        return results
