"""Namespace identity by inode and ethN allocation (netd.engine.nsident), with a fake kernel."""

from __future__ import annotations

import asyncio

import pytest
from samples import one_endpoint_state

from netd.core.epindex import EndpointIndex
from netd.core.errors import ConflictError
from netd.core.linkspec import NsProbe
from netd.core.model import DesiredState, Endpoint
from netd.core.request import Target
from netd.engine.nsident import NamespaceIndex, free_ifname

WEB_INO = 4026532001


def _probe(path: str) -> NsProbe:
    inodes = {"/run/netns/web": WEB_INO, "/proc/42/ns/net": WEB_INO, "/proc/7/ns/net": 4026532999}
    ino = inodes.get(path)
    return NsProbe((4, ino)) if ino is not None else NsProbe(None, "does not exist")


def _index() -> NamespaceIndex:
    return NamespaceIndex(_probe, lambda name: f"/run/netns/{name}")


def _with_path_endpoint(state: DesiredState) -> DesiredState:
    ep = Endpoint(
        id="f" * 64,
        network="b" * 64,
        netns_path="/proc/42/ns/net",
        netns_inode=WEB_INO,
        ifname="eth1",
        host_ifname="vethf",
        mac="02:00:00:00:00:02",
    )
    return state.model_copy(update={"endpoints": {**state.endpoints, ep.id: ep}})


def test_a_path_into_a_netd_netns_finds_its_endpoints() -> None:
    state = one_endpoint_state()
    found = _index().endpoints_in(
        EndpointIndex.build(state), Target(netns_path="/proc/42/ns/net"), _probe("/proc/42/ns/net")
    )
    assert [ep.netns for ep in found] == ["web"]
    other = _index().endpoints_in(
        EndpointIndex.build(state), Target(netns_path="/proc/7/ns/net"), _probe("/proc/7/ns/net")
    )
    assert other == []


def test_a_netd_netns_finds_the_endpoints_connected_by_path() -> None:
    state = _with_path_endpoint(one_endpoint_state())
    found = _index().endpoints_in(EndpointIndex.build(state), Target(netns="web"), _probe("/run/netns/web"))
    assert sorted(ep.ifname for ep in found) == ["eth0", "eth1"]


def test_free_ifname_skips_netds_and_foreign_names() -> None:
    foreign = {"eth0", "eth2"}

    async def has_link(name: str) -> bool:
        return name in foreign

    target = Target(netns="web")
    assert asyncio.run(free_ifname(target, {"eth1"}, has_link)) == "eth3"
    assert asyncio.run(free_ifname(target, {"eth1"}, None)) == "eth0"  # the namespace is not there yet

    async def everything(name: str) -> bool:
        return True

    with pytest.raises(ConflictError, match="all taken"):
        asyncio.run(free_ifname(target, set(), everything))


def test_members_are_the_endpoints_with_the_same_key() -> None:
    state = _with_path_endpoint(one_endpoint_state())
    idx = _index()
    index = EndpointIndex.build(state)
    for ep in state.endpoints.values():
        want = [e.id for e in state.endpoints.values() if idx.key(e) == idx.key(ep)]
        assert idx.members(index, ep) == want
    assert len(want) == 2  # by name and by path: one namespace
