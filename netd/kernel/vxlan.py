"""The overlay data plane in the kernel: the VXLAN device (create-or-verify) and its static FDB and neighbour
entries (observe, replace, delete, in batches).  Thin: netlink in, KernelError out; the decisions are the pure
``plan_*`` functions of :mod:`netd.core.vxlanspec`.

The device: learning off, ``proxy`` on (the VXLAN driver answers ARP and neighbour solicitations from its own
neighbour table, so they never cross the underlay), no group, no default remote, l2miss/l3miss off.  An entry:
FDB "MAC -> remote node" (AF_BRIDGE, NTF_SELF, NUD_PERMANENT) and neighbour "address -> MAC" (NUD_PERMANENT),
written with NLM_F_REPLACE so a stale or learned entry is overwritten, never answered with EEXIST.  The device
itself goes through pyroute2; the entries (thousands) are packed raw and sent in batches (netd.kernel.ndraw).

The kernel flushes a device's neighbour entries when it goes down: after ensure_vxlan has brought a device
back up, ensure_peers writes them again (it always compares with what the kernel has).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from functools import partial
from ipaddress import ip_address
from typing import Any

import structlog
from pyroute2.netlink.exceptions import NetlinkError

from netd.core.errors import KernelError
from netd.core.linkspec import owner_alias, owner_of
from netd.core.vxlanspec import (
    Addr,
    EntryPlan,
    FdbEntry,
    NeighEntry,
    ObservedEntries,
    ObservedVxlan,
    PeerEntry,
    VxlanSpec,
    check_vtep_family,
    overlay_mtu,
    plan_entries,
    plan_vxlan,
)
from netd.kernel import ndraw, rtbatch
from netd.kernel.link import IPR, get_link
from netd.kernel.ndraw import RTM_NEWNEIGH, decode_fdb, decode_neigh, dump_request
from netd.kernel.nlerror import kernel_error
from netd.kernel.observe import Msg, decode_link
from netd.kernel.rtbatch import Build
from netd.kernel.rtraw import (
    IFINFO,
    NLM_F_REQUEST,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    decode_addr,
    request,
)
from netd.kernel.rtraw import decode_link as decode_raw_link
from netd.kernel.rtraw import dump_request as link_dump_request
from netd.kernel.rtsock import DumpInterrupted, RouteSocket

log = structlog.get_logger()

NOT_OURS_HINT = "remove it or give the overlay network another device name"


def _obj(ifname: str) -> str:
    return f'vxlan "{ifname}"'


# ---------------------------------------------------------------------------------------------- device


def vxlan_of(msg: Msg) -> ObservedVxlan:
    """The fields netd checks of a pyroute2-decoded RTM_NEWLINK of kind vxlan."""

    def data(name: str) -> Any:
        return msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", name)

    local = data("IFLA_VXLAN_LOCAL") or data("IFLA_VXLAN_LOCAL6")
    group = data("IFLA_VXLAN_GROUP") or data("IFLA_VXLAN_GROUP6")
    link = decode_link(msg)
    alias = msg.get_attr("IFLA_IFALIAS")
    return ObservedVxlan(
        index=link.index,
        ifname=link.ifname,
        owner=owner_of(alias),
        alias=alias,
        vni=int(data("IFLA_VXLAN_ID") or 0),
        port=int(data("IFLA_VXLAN_PORT") or 0),
        local=ip_address(local) if local else None,
        group=ip_address(group) if group and not ip_address(group).is_unspecified else None,
        learning=bool(data("IFLA_VXLAN_LEARNING")),
        proxy=bool(data("IFLA_VXLAN_PROXY")),
        l2miss=bool(data("IFLA_VXLAN_L2MISS")),
        l3miss=bool(data("IFLA_VXLAN_L3MISS")),
        mtu=link.mtu,
        up=link.up,
        master=link.master,
    )


async def observe_vxlan(ipr: IPR, ifname: str) -> ObservedVxlan | None:
    """The VXLAN device ``ifname`` (None if there is no link of that name; KernelError if it is another kind)."""
    try:
        msg = await get_link(ipr, ifname)
    except NetlinkError as exc:
        raise kernel_error(_obj(ifname), "read", exc) from exc
    if msg is None:
        return None
    kind = decode_link(msg).kind
    if kind != "vxlan":
        raise KernelError(f'{_obj(ifname)}: an interface of kind "{kind}" already has this name; {NOT_OURS_HINT}')
    return vxlan_of(msg)


def _link_by_index_request(seq: int, index: int) -> bytes:
    return request(RTM_GETLINK, NLM_F_REQUEST, seq, IFINFO.pack(0, 0, index, 0, 0))


async def underlay_mtu(local: Addr) -> int:
    """The MTU of the interface that holds ``local`` (the node's advertise address)."""
    try:
        with RouteSocket() as rs:
            answer = await rs.ask(partial(link_dump_request, RTM_GETADDR), "address dump")
            index = next(
                (
                    found[0]
                    for m, data in answer
                    if m.type == RTM_NEWADDR
                    and (found := decode_addr(data, m.start, m.end)) is not None
                    and found[1] is not None
                    and found[1].ip == local
                ),
                None,
            )
            if index is None:
                raise KernelError(
                    f"underlay address {local}: not configured on any interface of this host; "
                    "set [cluster] advertise_address to one of this host's addresses"
                )
            links = await rs.ask(partial(_link_by_index_request, index=index), f"link {index}")
    except OSError as exc:
        raise kernel_error(f"underlay address {local}", "look up its interface", exc) from exc
    mtu = next((decode_raw_link(data, m.start, m.end).mtu for m, data in links if m.type == RTM_NEWLINK), 0)
    if not mtu:
        raise KernelError(f"underlay address {local}: its interface vanished; retry")
    return mtu


def _create_args(spec: VxlanSpec, mtu: int) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "ifname": spec.ifname,
        "kind": "vxlan",
        "vxlan_id": spec.vni,
        "vxlan_port": spec.port,
        "vxlan_learning": 0,
        "vxlan_proxy": 1,
        "vxlan_l2miss": 0,
        "vxlan_l3miss": 0,
        "mtu": mtu,
    }
    kw["vxlan_local" if spec.local.version == 4 else "vxlan_local6"] = str(spec.local)
    return kw


async def _create(ipr: IPR, spec: VxlanSpec, mtu: int) -> None:
    try:
        await ipr.link("add", **_create_args(spec, mtu))
    except NetlinkError as exc:
        hint = None
        if exc.code == errno.EEXIST:  # the name was free a moment ago: the kernel's VNI clash
            hint = (
                f"another VXLAN device already uses VNI {spec.vni} on port {spec.port}; "
                "remove it or give the overlay network another VNI "
                "(-o com.docker.network.driver.overlay.vxlanid_list=...)"
            )
        raise kernel_error(_obj(spec.ifname), "create", exc, hint) from exc


async def ensure_vxlan(ipr: IPR, spec: VxlanSpec) -> tuple[int, bool]:
    """Create, or verify and repair, the device; returns (ifindex, made) where ``made`` says the device is new
    (created or recreated: its FDB and neighbour entries are gone and must be written again)."""
    obj = _obj(spec.ifname)
    vlog = log.bind(ifname=spec.ifname, owner=spec.owner, vni=spec.vni)
    try:
        bridge = await get_link(ipr, spec.master)
        if bridge is None or decode_link(bridge).kind != "bridge":
            raise KernelError(
                f'{obj}: master bridge "{spec.master}" not found; create the network\'s bridge first'
            )
        master = int(bridge["index"])
        mtu = spec.mtu or overlay_mtu(await underlay_mtu(spec.local), spec.local)
        seen = await observe_vxlan(ipr, spec.ifname)
        made = seen is None
        if seen is not None:
            if seen.alias is not None and seen.owner != spec.owner:
                raise KernelError(
                    f'{obj}: belongs to "{seen.alias}", not to network {spec.owner}; {NOT_OURS_HINT}'
                )
            if seen.alias is None and (seen.up or seen.master is not None):
                # netd sets the alias right after the create: alias-less and in use is someone else's device
                raise KernelError(f"{obj}: exists and is not managed by netd; {NOT_OURS_HINT}")
            drift = plan_vxlan(spec, seen, mtu, master)
            if drift.recreate:
                vlog.warning("vxlan_recreated", reasons=list(drift.recreate))
                await ipr.link("del", index=seen.index)
                seen, made = None, True
            elif drift.change:
                change: dict[str, Any] = {"ifalias": owner_alias(spec.owner)} if "alias" in drift.change else {}
                if "mtu" in drift.change:
                    change["mtu"] = mtu
                if "master" in drift.change:
                    change["master"] = master
                if "up" in drift.change:
                    change["state"] = "up"
                await ipr.link("set", index=seen.index, **change)
                vlog.info("link_updated", kind="vxlan", changed=sorted(drift.change))
            if seen is not None:
                return seen.index, False
        await _create(ipr, spec, mtu)
        created = await get_link(ipr, spec.ifname)
        if created is None:
            raise KernelError(f"{obj}: vanished right after it was created; another tool is deleting it")
        index = int(created["index"])
        # IPv6 stays on (disable_ipv6 makes the kernel refuse IPv6 neighbour entries: EINVAL, measured); the
        # kernel's own multicast neighbours (ff02::/16 -> 33:33:..) are not reported by observe_entries
        await ipr.link("set", index=index, master=master, ifalias=owner_alias(spec.owner), state="up")
        vlog.info("link_created", kind="vxlan", mtu=mtu, local=str(spec.local), port=spec.port)
        return index, made
    except NetlinkError as exc:
        raise kernel_error(obj, "configure", exc) from exc


# ---------------------------------------------------------------------------------------------- entries


async def device_index(ipr: IPR, ifname: str) -> int:
    seen = await observe_vxlan(ipr, ifname)
    if seen is None:
        raise KernelError(f"{_obj(ifname)}: not found; ensure the overlay network's VXLAN device first")
    return seen.index


async def observe_entries(ifindex: int) -> ObservedEntries:
    """The device's own FDB entries and its IPv4/IPv6 neighbour entries (a raw socket of its own, the kernel
    filters by device)."""
    for attempt in range(5):
        try:
            with RouteSocket() as rs:
                fdb: list[FdbEntry] = []
                neigh: list[NeighEntry] = []
                fdb_dump = partial(dump_request, family=socket.AF_BRIDGE, ifindex=ifindex)
                for m, data in await rs.ask(fdb_dump, "fdb dump"):
                    if m.type == RTM_NEWNEIGH and (f := decode_fdb(data, m.start, m.end, ifindex)) is not None:
                        fdb.append(f)
                for family in (socket.AF_INET, socket.AF_INET6):
                    for m, data in await rs.ask(
                        partial(dump_request, family=family, ifindex=ifindex), "neighbour dump"
                    ):
                        if m.type == RTM_NEWNEIGH and (n := decode_neigh(data, m.start, m.end, ifindex)):
                            neigh.append(n)
            return ObservedEntries(tuple(fdb), tuple(neigh))
        except DumpInterrupted:
            if attempt == 4:
                raise KernelError(
                    f"device {ifindex}: entry dump interrupted 5 times; entries keep changing, retry"
                ) from None
        except OSError as exc:
            raise kernel_error(f"device {ifindex}", "dump fdb/neighbours", exc) from exc
    raise AssertionError("unreachable")


async def write_entries(ifname: str, reqs: Sequence[tuple[Build, str]], action: str, missing_ok: bool) -> None:
    """``rtbatch.write`` for the device's entries (ENOENT/ESRCH ignored with ``missing_ok``)."""
    missing = frozenset({errno.ENOENT, errno.ESRCH}) if missing_ok else frozenset()
    await rtbatch.write(_obj(ifname), reqs, action, missing)


async def apply_entries(ifname: str, ifindex: int, plan: EntryPlan) -> None:
    """Deletes first (so a MAC whose entry is replaced whole is not deleted after its new entry), then the FDB
    entries, then the neighbour entries (the proxy answers with a MAC the FDB already knows)."""
    dels: list[tuple[Build, str]] = [
        (partial(ndraw.fdb_del, ifindex=ifindex, mac=mac), f"fdb {mac}")
        for mac in dict.fromkeys(e.mac for e in plan.fdb_del)
    ]
    dels += [(partial(ndraw.neigh_del, ifindex=ifindex, ip=e.ip), f"neighbour {e.ip}") for e in plan.neigh_del]
    await write_entries(ifname, dels, "delete", missing_ok=True)
    puts: list[tuple[Build, str]] = [
        (partial(ndraw.fdb_put, ifindex=ifindex, e=e), f"fdb {e.mac} -> {e.dst}") for e in plan.fdb_put
    ]
    puts += [
        (partial(ndraw.neigh_put, ifindex=ifindex, e=e), f"neighbour {e.ip} -> {e.mac}") for e in plan.neigh_put
    ]
    await write_entries(ifname, puts, "replace", missing_ok=False)
    if plan:
        log.info(
            "vxlan_entries_applied",
            ifname=ifname,
            fdb_put=len(plan.fdb_put),
            fdb_del=len(plan.fdb_del),
            neigh_put=len(plan.neigh_put),
            neigh_del=len(plan.neigh_del),
        )


async def ensure_peers(ipr: IPR, ifname: str, peers: Sequence[PeerEntry]) -> EntryPlan:
    """Make the device's entries exactly those of ``peers``; returns what was changed (empty: nothing)."""
    seen = await observe_vxlan(ipr, ifname)
    if seen is None:
        raise KernelError(f"{_obj(ifname)}: not found; ensure the overlay network's VXLAN device first")
    check_vtep_family(list(peers), seen.local)
    index = seen.index
    plan = plan_entries(list(peers), await observe_entries(index))
    if plan:
        await apply_entries(ifname, index, plan)
    return plan
