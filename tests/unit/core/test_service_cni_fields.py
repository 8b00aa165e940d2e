"""Connect fields a container runtime sends (Interface, ContainerID, MacAddress) and disconnect by ContainerID."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_service_rollback import FakeApplier, _service

from netd.core.errors import ConflictError, InvalidError, NotFoundError
from netd.core.linkspec import NsProbe
from netd.core.request import parse_connect


class PathApplier(FakeApplier):
    """Every /run/netns/NAME is a distinct live namespace."""

    def ns_probe(self, path: str) -> NsProbe:
        if not path.startswith("/run/netns/"):
            return NsProbe(None, "does not exist")
        return NsProbe((4, 1000 + sum(map(ord, path))), "")


def test_parse_runtime_fields() -> None:
    c = parse_connect(
        {
            "NetnsPath": "/run/netns/c1",
            "Interface": "net1",
            "ContainerID": "abc_1.x-y",
            "EndpointConfig": {"MacAddress": "02-AA-bb-cc-dd-01"},
        }
    )
    assert (c.ifname, c.container_id, c.mac) == ("net1", "abc_1.x-y", "02:aa:bb:cc:dd:01")
    for body, field in (
        ({"Netns": "a", "Interface": "x" * 16}, "Interface"),
        ({"Netns": "a", "ContainerID": "a b"}, "ContainerID"),
        ({"Netns": "a", "EndpointConfig": {"MacAddress": "01:00:5e:00:00:01"}}, "mac"),
        ({"Netns": "a", "EndpointConfig": {"MacAddress": "02:00:00:00:01"}}, "mac"),
    ):
        with pytest.raises(InvalidError) as e:
            parse_connect(body)
        assert e.value.field == field


def test_runtime_connect_and_disconnect_by_container(tmp_path: Path) -> None:
    svc = _service(tmp_path, PathApplier(fail_first=False))

    async def go() -> None:
        await svc.create_network({"Name": "app", "IPAM": {"Config": [{"Subnet": "10.7.0.0/24"}]}})
        body = {"NetnsPath": "/run/netns/c1", "Interface": "net1", "ContainerID": "c1"}
        ep = await svc.connect("app", {**body, "EndpointConfig": {"MacAddress": "02:00:00:00:00:09"}})
        assert (ep.ifname, ep.container_id, ep.mac) == ("net1", "c1", "02:00:00:00:00:09")
        with pytest.raises(ConflictError):  # the same container and interface again
            await svc.connect("app", {**body, "NetnsPath": "/run/netns/c1b"})
        with pytest.raises(ConflictError, match="MAC address 02:00:00:00:00:09"):
            other = {"NetnsPath": "/run/netns/c2", "EndpointConfig": {"MacAddress": "02:00:00:00:00:09"}}
            await svc.connect("app", other)
        before = svc.state
        with pytest.raises(NotFoundError, match="container c9 has no endpoint"):
            await svc.disconnect("app", {"ContainerID": "c9"})
        with pytest.raises(NotFoundError):
            await svc.disconnect("app", {"ContainerID": "c1", "Interface": "eth0"})
        assert svc.state == before
        await svc.disconnect("app", {"ContainerID": "c1", "Interface": "net1"})
        assert svc.state.endpoints == {}
        assert svc.store.load().endpoints == {}

    asyncio.run(go())
