"""The desired state's invariants, checked on a loaded state file before anything reaches the kernel (pure).

The service never builds a state that breaks them; a state file that does (edited by hand, restored from another
host, written by a buggy version) would otherwise put one address on two endpoints or fight over one bridge.
Each problem names both objects, so the operator knows which one to remove or correct.
"""

from __future__ import annotations

from collections.abc import Iterable

from netd.core.model import DesiredState, Endpoint, Network


def state_problems(state: DesiredState) -> list[str]:
    """Every broken invariant of ``state``, one sentence each; empty when it is consistent."""
    return [
        *_keys(state),
        *_networks(state.networks.values()),
        *_endpoints(state),
    ]


def _keys(state: DesiredState) -> Iterable[str]:
    for key, net in state.networks.items():
        if key != net.name:
            yield f"network {net.name!r} is stored under the key {key!r}"
    for key, ns in state.netns.items():
        if key != ns.name:
            yield f"netns {ns.name!r} is stored under the key {key!r}"
    for key, ep in state.endpoints.items():
        if key != ep.id:
            yield f"endpoint {ep.id[:12]} is stored under the key {key[:12]!r}"


def _networks(networks: Iterable[Network]) -> Iterable[str]:
    seen: list[Network] = []
    for net in networks:
        for other in seen:
            if other.id == net.id:
                yield f"networks {other.name!r} and {net.name!r} have the same id {net.id[:12]}"
            if net.bridge and other.bridge == net.bridge:
                yield f"networks {other.name!r} and {net.name!r} both use bridge {net.bridge}"
            for mine in net.ipam:
                for theirs in other.ipam:
                    if mine.subnet.version == theirs.subnet.version and mine.subnet.overlaps(theirs.subnet):
                        yield (
                            f"networks {other.name!r} ({theirs.subnet}) and {net.name!r} ({mine.subnet}) "
                            "have overlapping subnets"
                        )
        seen.append(net)


def _endpoints(state: DesiredState) -> Iterable[str]:
    by_id = {net.id: net for net in state.networks.values()}
    addresses: dict[tuple[str, str], Endpoint] = {}  # (network id, address) -> holder
    ifnames: dict[tuple[str, str], Endpoint] = {}  # (namespace, ifname) -> holder
    for ep in state.endpoints.values():
        net = by_id.get(ep.network)
        if net is None:
            yield f"{_ep(ep)} belongs to network {ep.network[:12]}, but there is no network with that id"
        if ep.netns is not None and ep.netns not in state.netns:
            yield f"{_ep(ep)} is in netns {ep.netns!r}, but there is no netns of that name"
        for addr in (ep.ipv4, ep.ipv6):
            if addr is None:
                continue
            holder = addresses.setdefault((ep.network, str(addr.ip)), ep)
            if holder is not ep:
                name = repr(net.name) if net is not None else ep.network[:12]
                yield f"{_ep(holder)} and {_ep(ep)} of network {name} both have address {addr.ip}"
        holder = ifnames.setdefault((ep.target, ep.ifname), ep)
        if holder is not ep:
            yield f"{_ep(holder)} and {_ep(ep)} are both {ep.ifname} in {_where(ep)}"


def _ep(ep: Endpoint) -> str:
    return f"endpoint {ep.id[:12]} ({_where(ep)})"


def _where(ep: Endpoint) -> str:
    return f"netns {ep.netns!r}" if ep.netns is not None else f"namespace {ep.netns_path}"
