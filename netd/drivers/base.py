"""The one interface every network kind implements (pure), as systemd-networkd's ``NetDevVTable`` and netavark's
``NetworkDriver``: the planner, the service, the rule builder and DNS ask ``get_driver(net)`` and never test
the driver's name.

A driver

- parses and validates its ``-o`` options (``parse_options``) and builds the ``Network`` from them
  (``create_observes`` names the host links it needs to see for that, ``build_network`` checks and fills in);
- says what the network owns in the daemon's namespace (``link_names``: what a scoped reconcile observes and
  what a link-deleted event is about) and how an endpoint is made (``endpoint_host_ifname``, ``endpoint_mac``,
  ``observes_endpoint_netns``: whether the endpoint's link is found inside its namespace);
- plans: the network's host-side links with their drift check (``plan_network``), an endpoint's link
  (``plan_endpoint``), and its own extra changes from desired vs observed (``plan_extra``: say overlay's FDB and
  neighbour entries, as ``DriverAction``s, from what its ``observe_extra`` read); ``plan_cleanup`` removes what
  it owns that nobody wants any more;
- tells which firewall and DNS features apply to the network (``features``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Protocol

from netd.core.actions import Action, Observed, Scope
from netd.core.errors import InvalidError
from netd.core.linkspec import Iface, ObservedHost, ObservedPeer
from netd.core.model import DesiredState, Endpoint, Network
from netd.core.request import parse_bool_option

OPT_PARENT = "parent"
OPT_HOST_ACCESS = "host_access"


@dataclass(frozen=True)
class Features:
    """What the firewall and DNS do for a network of this kind."""

    filtered: bool  # netd's per-network chains (isolation between networks, icc, internal) on its host interface
    nat: bool  # masquerade of outbound traffic (when the network asks for it)
    published_ports: bool  # -p host ports DNAT'ed to endpoints
    dns: bool  # the embedded resolver answers on the network's gateway addresses
    routed: bool = True  # False: nothing is forwarded between its host interface and any other (overlay)
    local_links_only: bool = False  # its host links (and resolver) exist only while this node has endpoints
    scope: str = "local"  # Docker's Scope: "swarm" for networks the cluster shares
    # names answered by a resolver inside each endpoint's namespace (127.0.0.11, netd.dns.nsresolver): for
    # networks whose endpoints cannot reach a host address (macvlan/ipvlan), as Docker's embedded resolver
    ns_resolver: bool = False


NO_FEATURES = Features(filtered=False, nat=False, published_ports=False, dns=False)


class DriverOptions:
    """A driver's parsed options (each driver has its own frozen dataclass deriving from this)."""


class NetworkDriver(Protocol):
    name: str
    options: tuple[str, ...]  # the -o keys it accepts besides the common ones (com.docker.network.driver.mtu)

    # -- create ------------------------------------------------------------------------------------------------
    def parse_options(self, options: Mapping[str, str]) -> DriverOptions: ...

    def create_observes(self, base: Network, opts: DriverOptions) -> Collection[str] | None:
        """The host link names ``build_network`` needs to see (None: every link)."""
        ...

    def build_network(
        self, base: Network, opts: DriverOptions, host: ObservedHost, state: DesiredState
    ) -> Network:
        """``base`` carries what every kind shares (id, name, pools, internal, mtu, options); raise a clear
        error for what the kernel or the other networks do not allow.  Looks only: changes nothing."""
        ...

    def check_connect(self, net: Network, state: DesiredState) -> None: ...

    # -- what it owns ------------------------------------------------------------------------------------------
    def features(self, net: Network) -> Features: ...

    def link_names(self, net: Network) -> set[str]: ...

    def endpoint_host_ifname(self, ep_id: str) -> str: ...

    def endpoint_mac(self, net: Network, ep_id: str, ipv4: IPv4Address | None) -> str: ...

    def observes_endpoint_netns(self, net: Network) -> bool: ...

    # -- observing and planning --------------------------------------------------------------------------------
    async def observe_extra(self, kernel: Any, desired: DesiredState, scope: Scope) -> Any:
        """What the driver's ``plan_extra`` compares against (say the FDB of overlay's VXLAN devices), read
        through the kernel facade; the reconciler keeps it in ``Observed.extra[name]``.  None: nothing."""
        ...

    def plan_network(self, net: Network, observed: Observed) -> list[Action]: ...

    def plan_endpoint(
        self, ep: Endpoint, net: Network, ns_path: str, observed: Observed, refresh: bool = False
    ) -> list[Action]: ...

    def plan_extra(self, desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]: ...

    def plan_cleanup(self, desired: DesiredState, observed: Observed, scope: Scope) -> list[Action]: ...


def choice(options: Mapping[str, str], key: str, allowed: Collection[str], default: str) -> str:
    value = options.get(key, default).strip().lower() or default
    if value not in allowed:
        raise InvalidError(
            f"option {key}={options[key]!r} is not valid; use one of: {', '.join(allowed)}", field=key
        )
    return value


def bool_option(options: Mapping[str, str], key: str, default: bool) -> bool:
    return parse_bool_option(key, options[key]) if key in options else default


def gateways(ep: Endpoint, net: Network) -> tuple[IPv4Address | None, IPv6Address | None]:
    """The default routes of an endpoint that carries them: the pools' gateways, or the configured
    ``default-gateway`` (the default bridge's) in their place."""
    if not ep.default_route or net.internal:
        return None, None
    p4, p6 = net.pool(4), net.pool(6)
    gw4 = p4.gateway if p4 is not None and isinstance(p4.gateway, IPv4Address) else None
    gw6 = p6.gateway if p6 is not None and isinstance(p6.gateway, IPv6Address) else None
    return net.default_gateway4 or gw4, net.default_gateway6 or gw6


def peer_drift(
    addresses: tuple[Iface, ...],
    mac: str | None,
    mtu: int | None,
    gateway4: str | None,
    gateway6: str | None,
    seen: ObservedPeer | None,
) -> str | None:
    """What differs inside the endpoint's namespace (CNI's CHECK): state, MAC, MTU, addresses, and the default
    routes of the endpoint that carries them (``gateway4``/``gateway6``: the wanted gateway, "" for a route
    through the link without one, None: no default route wanted through it).  ``seen`` None: not observed."""
    if seen is None:
        return None
    link = seen.link
    if not link.up:
        return "down in its namespace"
    if mac and link.mac.lower() != mac.lower():
        return f"mac {link.mac} != {mac} in its namespace"
    if mtu and link.mtu != mtu:
        return f"mtu {link.mtu} != {mtu} in its namespace"
    missing = [a for a in addresses if a not in link.addresses]
    if missing:
        return "address missing in its namespace: " + ", ".join(str(a) for a in missing)
    for version, want, have in ((4, gateway4, seen.gateway4), (6, gateway6, seen.gateway6)):
        if want is None or want == have:
            continue
        if have is None:
            return f"IPv{version} default route missing in its namespace"
        return f"IPv{version} default route via {have or 'the link'} != {want or 'the link'} in its namespace"
    return None
