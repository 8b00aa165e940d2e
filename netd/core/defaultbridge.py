"""The default bridge's new config while it has endpoints: what applies now, what waits (pure).

Adding IPv6 is applied live (each endpoint gets an address of the new pool, as a connect would).  Any other
change of its subnets (bip, fixed-cidr, removing IPv6) needs the endpoints gone, as dockerd needs a restart
without containers: the old pools stay and the pending message says what to do.  MTU, ICC, masquerade, gateways
and DNS apply in either case (the caller re-applies the endpoints' namespace side).
"""

from __future__ import annotations

from ipaddress import IPv6Interface

from netd.core import ipam
from netd.core.model import Endpoint, IPAddress, Network


def live_change(
    current: Network, net: Network, eps: list[Endpoint], taken: set[IPAddress]
) -> tuple[Network, list[Endpoint], str | None]:
    """(the network to commit, its endpoints as they become, the pending change or None).  ``taken``: the
    addresses the network's endpoints hold (not changed)."""
    v6 = net.pool(6)
    if current.pool(4) == net.pool(4) and current.pool(6) is None and v6 is not None:
        held = set(taken)
        changed = []
        for ep in eps:
            addr = ipam.allocate(v6, held, None, network=net.name)
            held.add(addr)
            changed.append(ep.model_copy(update={"ipv6": IPv6Interface(f"{addr}/{v6.subnet.prefixlen}")}))
        return net, changed, None
    what = [f"{p.subnet}" for p in current.ipam]
    want = [f"{p.subnet}" for p in net.ipam]
    names = ", ".join(sorted({ep.netns or ep.netns_path or "?" for ep in eps}))
    msg = (
        f"default bridge {current.name!r}: its subnets {what} -> {want} (bip / fixed-cidr / ipv6) cannot "
        f"change while it has endpoints ({names}); disconnect them, then netd-ctl reload"
    )
    kept = net.model_copy(update={"ipam": current.ipam, "enable_ipv6": current.enable_ipv6})
    return kept, eps, msg
