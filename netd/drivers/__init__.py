"""Network drivers besides the bridge: macvlan and ipvlan, over one shared parent-link helper (pure).

``LINK_DRIVERS`` maps a driver name to its module's ``LinkDriver``; ``build_link_network`` turns a validated
create request into the desired-state ``Network``; ``netd.drivers.planning`` diffs them against the kernel.
"""

from __future__ import annotations

from collections.abc import Mapping

from netd.errors import ConflictError, InvalidError
from netd.linkspec import ObservedHost
from netd.model import DesiredState, IpamConfig, Network

from . import macvlan
from .base import LinkDriver, LinkOptions
from .ipvlan import IPVLAN
from .macvlan import MACVLAN
from .parent import parent_names, resolve_parent

LINK_DRIVERS: dict[str, LinkDriver] = {"macvlan": MACVLAN, "ipvlan": IPVLAN}


def is_link_network(net: Network) -> bool:
    return net.driver in LINK_DRIVERS


def link_driver(net: Network) -> LinkDriver:
    return LINK_DRIVERS[net.driver]


def parse_link_options(driver: str, options: Mapping[str, str], common: tuple[str, ...]) -> LinkOptions:
    """Check the option keys (``common``: those every driver takes) and parse the driver's own."""
    drv = LINK_DRIVERS[driver]
    known = (*drv.options, *common)
    for key in options:
        if key not in known:
            raise InvalidError(f"unknown option {key!r} for driver {driver}; known: {', '.join(known)}", field=key)
    return drv.parse_options(options)


def network_link_names(net: Network) -> set[str]:
    """The links in the daemon's namespace that belong to a network (a scoped reconcile observes these)."""
    if not is_link_network(net):
        return {net.bridge} if net.bridge else set()
    names = parent_names(net)
    if net.host_access:
        names.add(macvlan.shim_name(net.id))
    return names


def build_link_network(base: Network, opts: LinkOptions, host: ObservedHost, state: DesiredState) -> Network:
    """Fill in the parent (validated against the kernel and the other networks) and the driver's settings.

    ``base`` carries what every driver shares (id, name, pools, internal, mtu, options).
    """
    parent = resolve_parent(base.name, base.id, base.driver, opts, base.internal, host, state)
    pools: list[IpamConfig] = [p.model_copy(deep=True) for p in base.ipam]
    if opts.host_access:
        for pool in pools:
            if macvlan.HOST_ACCESS_AUX in pool.aux_addresses:
                raise ConflictError(
                    f"aux-address name {macvlan.HOST_ACCESS_AUX} is reserved for host_access", field="aux-address"
                )
            pool.aux_addresses[macvlan.HOST_ACCESS_AUX] = macvlan.host_access_address(pool)
    return base.model_copy(
        update={
            "parent": parent,
            "mode": opts.mode,
            "ipvlan_flag": opts.flag,
            "host_access": opts.host_access,
            "ipam": pools,
            "icc": True,
            "masquerade": False,
        }
    )


def check_connect(net: Network, state: DesiredState) -> None:
    """passthru: the kernel allows one macvlan on the parent, so one endpoint per network."""
    if net.mode == "passthru" and state.endpoints_of(net.id):
        raise ConflictError(
            f"network {net.name!r} is macvlan passthru and already has its one endpoint; disconnect it first "
            "or use macvlan_mode=bridge"
        )
