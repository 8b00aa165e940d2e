"""A state file that parses but breaks the state's invariants is refused at load, naming both objects."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path

import pytest
from samples import EP_ID, NET_ID, one_endpoint_state

from netd.core import ipam
from netd.core.errors import StateError
from netd.core.model import DesiredState, Endpoint, Netns, Network
from netd.engine.state import StateStore

OTHER_NET = "b" * 64
OTHER_EP = "f" * 64


def _second_endpoint(s: DesiredState, **changes: object) -> None:
    ep = s.endpoints[EP_ID]
    fields: dict[str, object] = {
        "id": OTHER_EP,
        "netns": "db",
        "host_ifname": "vethf",
        "mac": "02:00:00:00:00:02",
        "ipv4": IPv4Interface("172.30.0.3/24"),
    }
    fields.update(changes)
    new = ep.model_copy(update=fields)
    s.endpoints[new.id] = new
    s.netns.setdefault("db", Netns(name="db"))


def _other_network(s: DesiredState, subnet: str = "172.31.0.0/24", bridge: str = "br-other") -> None:
    s.networks["other"] = Network(id=OTHER_NET, name="other", bridge=bridge, ipam=[ipam.validate_pool(subnet)])


def same_address(s: DesiredState) -> None:
    _second_endpoint(s, ipv4=IPv4Interface("172.30.0.2/24"))


def missing_network(s: DesiredState) -> None:
    _second_endpoint(s, network=OTHER_NET)


def missing_netns(s: DesiredState) -> None:
    _second_endpoint(s)
    del s.netns["db"]


def overlapping_subnets(s: DesiredState) -> None:
    _other_network(s, subnet="172.30.0.128/25")


def same_bridge(s: DesiredState) -> None:
    _other_network(s, bridge="br-app")


def same_ifname_in_one_namespace(s: DesiredState) -> None:
    _other_network(s)
    _second_endpoint(s, netns="web", network=OTHER_NET, ipv4=IPv4Interface("172.31.0.2/24"))


CASES: list[tuple[Callable[[DesiredState], None], list[str]]] = [
    (same_address, ["172.30.0.2", EP_ID[:12], OTHER_EP[:12], "'app'"]),
    (missing_network, [OTHER_EP[:12], OTHER_NET[:12], "no network"]),
    (missing_netns, [OTHER_EP[:12], "'db'", "no netns"]),
    (overlapping_subnets, ["'app'", "'other'", "172.30.0.0/24", "172.30.0.128/25"]),
    (same_bridge, ["'app'", "'other'", "br-app"]),
    (same_ifname_in_one_namespace, [EP_ID[:12], OTHER_EP[:12], "eth0", "netns 'web'"]),
]


@pytest.mark.parametrize(("breaks", "needles"), CASES, ids=[c[0].__name__ for c in CASES])
def test_inconsistent_state_file_is_refused(
    tmp_path: Path, breaks: Callable[[DesiredState], None], needles: list[str]
) -> None:
    s = one_endpoint_state()
    breaks(s)
    path = tmp_path / "state.json"
    content = s.model_dump_json().encode()
    path.write_bytes(content)
    with pytest.raises(StateError) as e:
        StateStore(path).load()
    for needle in needles:
        assert needle in e.value.message
    assert str(path) in e.value.message and "state.json.prev" in e.value.message  # how to fix it
    assert path.read_bytes() == content


def test_inconsistency_made_by_the_journal_is_refused(tmp_path: Path) -> None:
    """The check runs on the replayed state, so a conflict that only the journal's records create is found."""
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.load()
    s = one_endpoint_state()
    store.save(s)
    broken = s.copy_for_change()
    same_address(broken)
    store.save(broken)
    with pytest.raises(StateError, match=r"172\.30\.0\.2"):
        StateStore(path).load()


def test_a_consistent_state_loads(tmp_path: Path) -> None:
    s = one_endpoint_state()
    _other_network(s)
    _second_endpoint(s)  # one more endpoint on "app", in another namespace, with its own address
    _second_endpoint(s, id="c" * 64, netns="db", ifname="eth1", network=OTHER_NET, ipv4=None)
    pool = ipam.validate_pool("10.9.0.0/24")
    macvlan = Network(id="d" * 64, name="mv", driver="macvlan", bridge="", ipam=[pool])
    s.networks["mv"] = macvlan
    s.networks["mv2"] = macvlan.model_copy(update={"id": "9" * 64, "name": "mv2", "ipam": []})  # both bridge ""
    s.endpoints["8" * 64] = Endpoint(
        id="8" * 64,
        network=NET_ID,
        netns_path="/proc/1/ns/net",
        ifname="eth0",
        host_ifname="veth8",
        mac="02:00:00:00:00:08",
        ipv4=IPv4Interface("172.30.0.9/24"),
    )
    path = tmp_path / "state.json"
    path.write_bytes(s.model_dump_json().encode())
    assert StateStore(path).load() == s
