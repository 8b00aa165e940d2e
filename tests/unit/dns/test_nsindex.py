"""Which namespaces get a resolver of their own and what it answers (netd.dns.nsindex): pure."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, ip_interface, ip_network

from netd.core.epindex import EndpointIndex
from netd.core.model import DesiredState, Endpoint, IpamConfig, Netns, Network
from netd.dns.nsindex import NS_RESOLVER, WantedTracker, ns_index, wanted
from netd.dns.resolvconf import wanted_resolvers


def _state() -> DesiredState:
    st = DesiredState()
    st.networks["mv"] = Network(
        id="m" * 64,
        name="mv",
        driver="macvlan",
        bridge="",
        options={"parent": "eth0"},
        ipam=[IpamConfig(subnet=ip_network("10.86.0.0/24"), gateway="10.86.0.1")],
    )
    st.networks["br"] = Network(
        id="b" * 64,
        name="br",
        driver="bridge",
        bridge="br-b",
        ipam=[IpamConfig(subnet=ip_network("172.31.7.0/24"), gateway="172.31.7.1")],
    )
    st.networks["in"] = Network(
        id="i" * 64,
        name="in",
        driver="bridge",
        bridge="br-i",
        internal=True,
        ipam=[IpamConfig(subnet=ip_network("172.31.8.0/24"), gateway="172.31.8.1")],
    )
    return st


def _ep(st: DesiredState, ep_id: str, net: str, ns: str, ip: str, *aliases: str, path: bool = False) -> None:
    st.endpoints[ep_id] = Endpoint(
        id=ep_id,
        network=net * 64,
        netns=None if path else ns,
        netns_path=ns if path else None,
        ifname="eth0",
        host_ifname="v",
        mac="",
        ipv4=ip_interface(ip),
        aliases=list(aliases),
    )
    if not path:
        st.netns[ns] = Netns(name=ns)


def test_namespaces_on_macvlan_get_one_serving_all_their_networks() -> None:
    st = _state()
    _ep(st, "e1", "m", "a", "10.86.0.2/24")
    _ep(st, "e2", "b", "a", "172.31.7.2/24")
    _ep(st, "e3", "b", "b", "172.31.7.3/24", "www")  # bridge only: the gateway resolver serves it
    _ep(st, "e4", "m", "/proc/9/ns/net", "10.86.0.4/24", "ext", path=True)
    assert wanted(st) == {"netns:a": frozenset({"m" * 64, "b" * 64}), "path:/proc/9/ns/net": frozenset({"m" * 64})}
    idx = ns_index(st, wanted(st)["netns:a"], "a")
    assert idx.names["www"] == ([IPv4Address("172.31.7.3")], [])
    assert idx.names["ext"] == ([IPv4Address("10.86.0.4")], [])
    assert idx.forward and idx.allows(IPv4Address("127.0.0.1"))  # only the namespace's processes reach it
    # resolv.conf: the namespace's own resolver wins even when a bridge was connected first
    assert wanted_resolvers(st)["a"][0] == (NS_RESOLVER,)
    assert wanted_resolvers(st)["b"][0] == (IPv4Address("172.31.7.1"),)


def test_internal_only_namespaces_do_not_forward() -> None:
    st = _state()
    st.networks["mv"] = st.networks["mv"].model_copy(update={"internal": True})
    _ep(st, "e1", "m", "a", "10.86.0.2/24")
    assert not ns_index(st, wanted(st)["netns:a"], "a").forward


def test_the_tracker_follows_every_change_as_a_full_computation() -> None:
    rng = random.Random(12)
    st = _state()
    tracker = WantedTracker()
    nss = [f"n{i}" for i in range(6)] + ["/proc/1/ns/net", "/proc/2/ns/net"]
    for step in range(400):
        st = st.copy_for_change()
        r = rng.random()
        if r < 0.5:
            ns = rng.choice(nss)
            _ep(st, f"e{step}", rng.choice("mbi"), ns, f"10.9.{step % 250}.1/16", path=ns.startswith("/"))
        elif r < 0.9 and st.endpoints:
            del st.endpoints[rng.choice(sorted(st.endpoints))]
        elif r < 0.95 and "mv" in st.networks:
            st.networks["mv"] = st.networks["mv"].model_copy(update={"internal": not st.networks["mv"].internal})
        else:
            st.networks.pop("mv", None) if "mv" in st.networks else st.networks.update(mv=_state().networks["mv"])
        before = dict(tracker.current)
        changes = tracker.update(st)
        assert tracker.current == wanted(st), step
        assert {t for t in set(before) | set(tracker.current) if before.get(t) != tracker.current.get(t)} == set(
            changes
        )


def test_with_the_endpoint_index_the_tracker_and_the_resolvers_match_a_full_computation() -> None:
    """The daemon passes the state's EndpointIndex: the tracker catches up by the endpoints it names, and the
    resolv.conf servers of a few namespaces come from their own endpoints; both as computed from everything."""
    rng = random.Random(21)
    st = _state()
    for n in ("n0", "n1", "n2", "n3"):
        st.netns[n] = Netns(name=n)
    idx = EndpointIndex.build(st)
    tracker = WantedTracker()
    nss = ["n0", "n1", "n2", "n3", "gone", "/proc/1/ns/net"]
    for step in range(400):
        new = st.copy_for_change()
        changed: set[str] = set()
        r = rng.random()
        if r < 0.55:
            ns = rng.choice(nss)
            _ep(new, f"e{step}", rng.choice("mbi"), ns, f"10.9.{step % 250}.1/16", path=ns.startswith("/"))
            changed.add(f"e{step}")
        elif r < 0.95 and new.endpoints:
            gone = rng.choice(sorted(new.endpoints))
            del new.endpoints[gone]
            changed.add(gone)
        elif "mv" in new.networks:
            del new.networks["mv"]
        else:
            new.networks["mv"] = _state().networks["mv"]
        idx = idx.derive(new, changed)
        st = new
        if rng.random() < 0.2:  # a state the tracker is not told about: it must still catch up
            continue
        tracker.update(st, idx)
        assert tracker.current == wanted(st), step
        names = rng.sample(nss, 2)
        want = {k: v for k, v in wanted_resolvers(st).items() if k in names}
        assert wanted_resolvers(st, names, index=idx) == want, step
