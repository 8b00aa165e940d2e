"""The parent link of macvlan/ipvlan networks: one piece of code for every driver that has children (pure).

A parent is one of:

- ``existing``: an interface that was there before the network (``-o parent=eth0``); netd only checks it.
- ``vlan``: ``-o parent=eth0.50`` that did not exist: netd creates the 802.1q sub-interface (id 50 on eth0),
  marks it ``netd:<network id>`` and removes it when no network uses it any more.  A sub-interface that existed
  before netd is an ``existing`` parent and is never removed.
- ``dummy``: no ``parent`` (or ``--internal``): a dummy link ``dm-<id>`` owned by the network, so its endpoints
  can only talk to each other (Docker's behaviour).

Validation happens before any change: unknown parents, bridge ports, VLAN ids, a VLAN already used under
another name, and networks that would share a parent in ways the kernel cannot do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from netd.core.errors import ConflictError, InvalidError, NotFoundError
from netd.core.linkspec import ObservedHost, ObservedLink, ParentSpec
from netd.core.model import DesiredState, Network, ParentLink
from netd.core.naming import validate_ifname
from netd.drivers.base import OPT_PARENT, DriverOptions


@dataclass(frozen=True)
class LinkOptions(DriverOptions):
    """A macvlan/ipvlan network's options, validated."""

    parent: str | None  # None: a dummy parent owned by netd
    mode: str
    flag: str | None = None
    host_access: bool = False


PARENT_KINDS = ("vlan", "dummy")  # the kinds netd creates as parents
VLAN_IDS = range(1, 4095)


def dummy_name(net_id: str) -> str:
    return "dm-" + net_id[:12]


def split_vlan(name: str) -> tuple[str, int] | None:
    """``eth0.50`` -> ("eth0", 50); None when the name has no numeric ``.<id>`` suffix."""
    base, dot, tag = name.rpartition(".")
    if not dot or not base or not tag.isdigit():
        return None
    vid = int(tag)
    if vid not in VLAN_IDS:
        raise InvalidError(
            f"parent {name!r}: VLAN id {vid} is out of range; 802.1q ids are 1-4094", field=OPT_PARENT
        )
    return base, vid


def resolve_parent(
    net_name: str,
    net_id: str,
    driver: str,
    opts: LinkOptions,
    internal: bool,
    host: ObservedHost,
    state: DesiredState,
) -> ParentLink:
    """Decide what the network's parent is, or raise a clear error.  Looks only: changes nothing."""
    if internal or opts.parent is None:
        return ParentLink(ifname=dummy_name(net_id), kind="dummy", managed=True)
    name = validate_ifname(opts.parent, OPT_PARENT)
    where = f"network {net_name!r}: parent {name}"
    _check_sharing(where, name, driver, opts, state)
    for other in state.networks.values():
        if other.parent is not None and other.parent.ifname == name:
            return other.parent.model_copy()  # a sub-interface netd made for another network stays netd's
    link = host.by_name.get(name)
    vlan = split_vlan(name)
    if link is not None:
        _check_usable(where, link, host, opts)
        if link.kind == "vlan" and link.owner is not None and vlan is not None:
            return ParentLink(ifname=name, kind="vlan", base=vlan[0], vlan_id=vlan[1], managed=True)
        return ParentLink(ifname=name, kind="existing")
    if vlan is None:
        raise NotFoundError(
            f"{where} does not exist; give an existing interface (see ip link) or an 802.1q sub-interface "
            "such as eth0.50",
            field=OPT_PARENT,
        )
    base_name, vid = vlan
    base = host.by_name.get(base_name)
    if base is None:
        raise NotFoundError(
            f"{where}: the interface {base_name} for VLAN {vid} does not exist; check -o parent", field=OPT_PARENT
        )
    for lk in host.by_name.values():
        if lk.kind == "vlan" and lk.link_index == base.index and lk.vlan_id == vid:
            raise ConflictError(
                f"{where}: VLAN {vid} on {base_name} already exists as {lk.ifname}; use -o parent={lk.ifname}",
                field=OPT_PARENT,
            )
    if opts.mode == "passthru":
        _check_usable(where, base, host, opts)
    return ParentLink(ifname=name, kind="vlan", base=base_name, vlan_id=vid, managed=True)


def _check_usable(where: str, link: ObservedLink, host: ObservedHost, opts: LinkOptions) -> None:
    if link.kind == "loopback":
        raise InvalidError(f"{where} is the loopback interface; give a network interface", field=OPT_PARENT)
    if link.owner is not None and link.kind != "vlan":
        raise ConflictError(
            f"{where} is an interface netd manages ({link.kind}); give a physical interface or a VLAN",
            field=OPT_PARENT,
        )
    master = host.by_index.get(link.master) if link.master is not None else None
    if master is not None and master.kind == "bridge":
        why = "passthru takes the whole interface" if opts.mode == "passthru" else "the bridge owns its frames"
        raise ConflictError(
            f"{where} is a port of bridge {master.ifname} ({why}); use the bridge itself or another interface",
            field=OPT_PARENT,
        )


def _check_sharing(where: str, name: str, driver: str, opts: LinkOptions, state: DesiredState) -> None:
    """Networks may share a parent only where the kernel can: one driver, same ipvlan mode, no passthru."""
    for other in state.networks.values():
        if other.parent is None or other.parent.ifname != name:
            continue
        clash = f"{where} is already used by {other.driver} network {other.name!r}"
        if other.driver != driver:
            raise ConflictError(f"{clash}; macvlan and ipvlan cannot share a parent", field=OPT_PARENT)
        if "passthru" in (opts.mode, other.mode):
            raise ConflictError(f"{clash}; passthru needs the parent for itself", field=OPT_PARENT)
        if driver == "ipvlan" and (opts.mode, opts.flag) != (other.mode, other.ipvlan_flag):
            raise ConflictError(
                f"{clash} in ipvlan_mode={other.mode} ipvlan_flag={other.ipvlan_flag}; ipvlan networks on one "
                "parent must use the same mode and flag",
                field=OPT_PARENT,
            )


# ---------------------------------------------------------------------------------------------- planning


def build_parent_spec(net: Network) -> ParentSpec:
    assert net.parent is not None
    p = net.parent
    return ParentSpec(
        ifname=p.ifname, owner=net.id, kind=p.kind, managed=p.managed, base=p.base, vlan_id=p.vlan_id
    )


def parent_drift(spec: ParentSpec, seen: ObservedLink | None) -> str | None:
    if seen is None:
        return "missing"
    if not spec.managed:
        return None  # someone else's: netd never changes it
    if seen.kind != spec.kind:
        return f"{spec.ifname} is a {seen.kind}, not a {spec.kind}"
    if seen.owner is None:
        return "not marked as netd's"
    if spec.kind == "vlan" and seen.vlan_id != spec.vlan_id:
        return f"VLAN id {seen.vlan_id} != {spec.vlan_id}"
    if not seen.up:
        return "down"
    return None


def parent_names(net: Network) -> set[str]:
    """Link names in the daemon's namespace a network's parent involves (what a scoped reconcile observes)."""
    if net.parent is None:
        return set()
    return {n for n in (net.parent.ifname, net.parent.base) if n}


def wanted_parents(nets: Iterable[Network]) -> set[str]:
    return {n.parent.ifname for n in nets if n.parent is not None and n.parent.managed}


def gone_parents(desired: DesiredState, host: ObservedHost) -> list[str]:
    """netd-made parents (among the observed links) that no network wants any more."""
    wanted = wanted_parents(desired.networks.values())
    by_id = {n.id: n for n in desired.networks.values()}
    out = []
    for link in sorted(host.by_name.values(), key=lambda lk: lk.ifname):
        if link.owner is None or link.kind not in PARENT_KINDS or link.ifname in wanted:
            continue
        owner_net = by_id.get(link.owner)
        if owner_net is not None and owner_net.parent is None:
            continue  # another kind of network made it: not ours to judge
        out.append(link.ifname)
    return out
