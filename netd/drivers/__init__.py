"""One driver per network kind behind one interface (``base.NetworkDriver``), chosen by ``get_driver(net)``.

The planner, the service, the firewall's rule builder and DNS ask the network's driver; none of them tests a
driver's name.  A new kind is one module here and one line in ``DRIVERS``.
"""

from __future__ import annotations

from typing import Any

from netd.core.errors import InvalidError
from netd.core.model import Network
from netd.core.request import OPT_MTU, NetworkCreate, parse_common_options
from netd.core.request import parse_network_create as parse_create_body
from netd.drivers.base import DriverOptions, Features, NetworkDriver
from netd.drivers.bridge import BRIDGE
from netd.drivers.ipvlan import IPVLAN
from netd.drivers.macvlan import MACVLAN
from netd.drivers.overlay import OVERLAY_DRIVER

DRIVERS: dict[str, NetworkDriver] = {d.name: d for d in (BRIDGE, MACVLAN, IPVLAN, OVERLAY_DRIVER)}
CLUSTER_DRIVERS = frozenset({OVERLAY_DRIVER.name})  # defined in the cluster store, not on one node
COMMON_OPTIONS = (OPT_MTU,)  # every kind takes these

__all__ = [
    "CLUSTER_DRIVERS",
    "DRIVERS",
    "DriverOptions",
    "Features",
    "NetworkDriver",
    "get_driver",
    "parse_network_create",
]


def get_driver(net: Network | str) -> NetworkDriver:
    return DRIVERS[net if isinstance(net, str) else net.driver]


def parse_network_create(body: Any) -> tuple[NetworkCreate, DriverOptions]:
    """A create body: the common part, then the driver's own options (unknown keys are refused)."""
    req = parse_create_body(body)
    drv = DRIVERS.get(req.driver)
    if drv is None:
        raise InvalidError(f"unknown driver {req.driver!r}; supported: {', '.join(DRIVERS)}", field="Driver")
    known = tuple(dict.fromkeys((*drv.options, *COMMON_OPTIONS)))
    if "encrypted" in req.options and "encrypted" not in known:
        raise InvalidError(
            f"option encrypted: only overlay networks can be encrypted (IPsec between nodes), not a {drv.name} "
            "network; create it with -d overlay --opt encrypted, or leave the option out",
            field="encrypted",
        )
    for key in req.options:
        if key not in known:
            raise InvalidError(
                f"unknown option {key!r} for driver {drv.name}; known: {', '.join(known)}", field=key
            )
    opts = drv.parse_options(req.options)
    return parse_common_options(req), opts
