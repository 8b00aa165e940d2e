"""The kernel facade's overlay (part of ``netd.kernel.facade.Kernel``): an overlay network's VXLAN device with
its FDB and neighbour entries, and IPsec (XFRM) for the traffic between nodes."""

from __future__ import annotations

from collections.abc import Sequence

from netd.core.ipsecspec import DesiredXfrm
from netd.core.vxlanspec import EntryPlan, ObservedEntries, ObservedVxlan, PeerEntry, VxlanSpec
from netd.kernel import vxlan as vxlanops
from netd.kernel import xfrm as xfrmops
from netd.kernel.facade_links import KernelLinks


class KernelOverlay(KernelLinks):
    """The overlay operations of ``Kernel`` (a VXLAN device is a link: ``delete_vxlan`` is ``delete_links``)."""

    # ------------------------------------------------------------------------------------------ overlay (VXLAN)

    async def ensure_vxlan(self, spec: VxlanSpec) -> bool:
        """Create, or verify and repair, an overlay network's VXLAN device on its bridge (ensure the bridge
        first).  True when the device is new (created or recreated): its entries must be written again."""
        _index, made = await vxlanops.ensure_vxlan(await self._host_socket(), spec)
        return made

    async def observe_vxlan(self, ifname: str) -> ObservedVxlan | None:
        return await vxlanops.observe_vxlan(await self._host_socket(), ifname)

    async def observe_vxlan_entries(self, ifname: str, index: int | None = None) -> ObservedEntries:
        """The device's own FDB entries (NTF_SELF) and its neighbour entries (``index``: the device's, when
        the caller has just observed it; saves a link lookup)."""
        if index is None:
            index = await vxlanops.device_index(await self._host_socket(), ifname)
        return await vxlanops.observe_entries(index)

    async def ensure_vxlan_peers(self, ifname: str, peers: Sequence[PeerEntry]) -> EntryPlan:
        """Make the device's FDB and neighbour entries exactly those of ``peers`` (replace what is missing or
        wrong, delete the rest), in batches; returns what it changed."""
        return await vxlanops.ensure_peers(await self._host_socket(), ifname, peers)

    async def apply_vxlan_entries(self, ifname: str, plan: EntryPlan, index: int | None = None) -> None:
        """Write ``plan`` as it is (deletes, then FDB and neighbour replaces), in batches."""
        if index is None:
            index = await vxlanops.device_index(await self._host_socket(), ifname)
        await vxlanops.apply_entries(ifname, index, plan)

    async def delete_vxlan(self, ifname: str) -> None:
        """Remove the device (its entries go with it); missing is fine."""
        await self.delete_links([ifname])

    # ------------------------------------------------------------------------------------------ IPsec (XFRM)

    async def probe_esp(self) -> None:
        """KernelError saying what to load unless ESP + rfc4106(gcm(aes)) work (checked in a scratch netns)."""
        await xfrmops.probe_esp()

    async def observe_xfrm(self) -> DesiredXfrm:
        """netd's own ESP SAs and out policies in the daemon's netns (reqid/mark 0x6E<VNI>), nothing foreign."""
        xs = await xfrmops.open_xfrm()
        with xs:
            return await xfrmops.observe_xfrm(xs)

    async def apply_xfrm(self, actions: Sequence[xfrmops.Action]) -> None:
        """The ordered actions of ``overlay_crypto.plan_xfrm``."""
        xs = await xfrmops.open_xfrm()
        with xs:
            await xfrmops.apply_xfrm(xs, actions)
