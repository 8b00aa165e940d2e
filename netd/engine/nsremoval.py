"""The namespaces one reconcile pass removes, unmounted together.

``netns rm A B C ...`` plans one ``RemoveNetns`` per namespace; each used to unmount in a fresh thread of its
own (a thread start each: 28 of 278 samples of a 200-namespace removal).  At the first of a pass's removals all
of them run in one fresh thread (``Kernel.remove_netns_many``); each action then reports its own namespace's
result, so errors stay attributed to their owner.  RemoveNetns is never run in parallel (``waves``).
"""

from __future__ import annotations

from collections.abc import Sequence

from netd.core.actions import Action, RemoveNetns
from netd.kernel.facade import Kernel
from netd.kernel.nlerror import kernel_error


class NetnsRemovals:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._names: list[str] = []
        self._results: dict[str, OSError | None] | None = None

    def start(self, actions: Sequence[Action]) -> None:
        """A new pass: these are its actions."""
        self._names = [a.name for a in actions if isinstance(a, RemoveNetns)]
        self._results = None

    async def remove(self, name: str) -> None:
        many = getattr(self.kernel, "remove_netns_many", None)  # narrow fake kernels need not have it
        if len(self._names) < 2 or many is None:
            await self.kernel.remove_netns(name)
            return
        if self._results is None:
            self._results = await many(self._names)
        err = self._results.get(name)
        if err is not None:
            raise kernel_error(f'netns "{name}"', "remove", err) from err
