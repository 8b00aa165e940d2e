"""Which namespace a connect targets, checked and identified: pure, the kernel is read through callbacks.

A namespace is its nsfs inode: ``/run/netns/a``, ``/proc/PID/ns/net`` and a netd netns name may all name one.
Interface names are allocated once per namespace (not per spelling), like Docker: the next ``ethN`` used neither
by netd's endpoints there nor by any link already in it (a runtime's own eth0 is never taken over or deleted).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from netd.core.epindex import EndpointIndex
from netd.core.errors import ConflictError, InvalidError, NotFoundError
from netd.core.linkspec import NsProbe
from netd.core.model import Endpoint
from netd.core.request import Target

MAX_IFNAMES = 64  # ethN tried beyond the ones netd uses in the namespace


def check_netns_path(path: str, found: NsProbe) -> None:
    """A NetnsPath must be a live network namespace, and neither netd's own nor the host's initial one."""
    if found.ident is None:
        if found.problem == "does not exist":
            raise NotFoundError(
                f"{path} is not a network namespace (is the process still running?)", field="NetnsPath"
            )
        what = found.problem if found.problem.startswith("cannot") else f"{found.problem}, not a network namespace"
        raise InvalidError(
            f"NetnsPath {path} {what}; pass a network namespace file such as /proc/PID/ns/net (of a process in "
            "the container) or /run/netns/NAME",
            field="NetnsPath",
        )
    if found.own:
        what = (
            "is netd's own network namespace (the host's)"
            if found.own == "netd"
            else "is the host's initial network namespace (PID 1's)"
        )
        raise InvalidError(
            f"NetnsPath {path} {what}; connecting it would move the host's interfaces and default route under "
            "netd's control: pass the container's namespace (/proc/PID/ns/net of a process inside it)",
            field="NetnsPath",
        )


def spelling(ep: Endpoint) -> str:
    return f"netns {ep.netns!r}" if ep.netns is not None else f"namespace {ep.netns_path}"


class NamespaceIndex:
    """The inode of each netd netns, cached: a path connect compares it with every netns that has endpoints.

    The endpoints of a namespace come from the state's ``EndpointIndex`` (by netns name, by inode), so finding
    them costs the same with 10 or 1000 endpoints."""

    def __init__(self, probe: Callable[[str], NsProbe], netns_path: Callable[[str], str]) -> None:
        self.probe = probe
        self.netns_path = netns_path
        self._inodes: dict[str, int] = {}
        self._names: dict[int, dict[str, None]] = {}  # the reverse of _inodes

    def forget(self, name: str) -> None:
        ino = self._inodes.pop(name, None)
        if ino is not None:
            names = self._names.get(ino, {})
            names.pop(name, None)
            if not names:
                self._names.pop(ino, None)

    def _remember(self, name: str, ino: int) -> None:
        if self._inodes.get(name) != ino:
            self.forget(name)
            self._inodes[name] = ino
            self._names.setdefault(ino, {})[name] = None

    def inode(self, name: str) -> int | None:
        ino = self._inodes.get(name)
        if ino is None:
            found = self.probe(self.netns_path(name)).ident
            if found is None:
                return None
            ino = found[1]
            self._remember(name, ino)
        return ino

    def key(self, ep: Endpoint) -> str:
        """The identity of the endpoint's namespace, whatever spelling connected it: its inode when known (a
        path's at connect time, a netd netns's from the cache), else the spelling (``Endpoint.target``)."""
        ino = ep.netns_inode if ep.netns is None else self.inode(ep.netns)
        return f"inode:{ino}" if ino is not None else ep.target

    def _netns_with_inode(self, index: EndpointIndex, ino: int) -> list[str]:
        """The netd netns with endpoints whose namespace is ``ino`` (those not cached yet are probed once)."""
        for name in index.netns_names() - self._inodes.keys():
            self.inode(str(name))
        return list(self._names.get(ino) or ())

    def endpoints_in(self, index: EndpointIndex, target: Target, found: NsProbe) -> list[Endpoint]:
        """The endpoints in the target's namespace, whatever name or path they were connected by."""
        if found.ident is None:
            return index.in_target(target.key())
        ino = found.ident[1]
        if target.netns is not None:  # two netd netns are never one namespace: only a path can be another name
            self._remember(target.netns, ino)
            names = [target.netns]
        else:
            names = self._netns_with_inode(index, ino)
        return index.union([("inode", ino), *(("netns", n) for n in names)])

    def members(self, index: EndpointIndex, ep: Endpoint) -> list[str]:
        """The ids of the endpoints of ``index`` with the same ``key`` as ``ep``, in the state's order (those
        ``assign_default_routes`` chooses among when ``ep`` comes or goes)."""
        k = self.key(ep)
        if not k.startswith("inode:"):
            candidates = index.in_target(k)
        else:
            ino = int(k.removeprefix("inode:"))
            if ep.netns is not None:  # another netd netns is never this namespace: no need to probe them all
                names = list(dict.fromkeys([ep.netns, *(self._names.get(ino) or ())]))
            else:
                names = self._netns_with_inode(index, ino)
            candidates = index.union([("inode", ino), *(("netns", n) for n in names)])
        return [e.id for e in candidates if self.key(e) == k]


async def free_ifname(target: Target, used: set[str], taken: Callable[[str], Awaitable[bool]] | None) -> str:
    """The first ethN not in ``used`` (netd's endpoints in the namespace) for which ``taken`` (a link of that
    name exists in the namespace; None: the namespace is not there yet) is false."""
    for i in range(len(used) + MAX_IFNAMES):
        ifname = f"eth{i}"
        if ifname not in used and (taken is None or not await taken(ifname)):
            return ifname
    raise ConflictError(
        f"{target.describe()}: eth0 to eth{len(used) + MAX_IFNAMES - 1} are all taken by other interfaces; "
        "remove some of them"
    )
