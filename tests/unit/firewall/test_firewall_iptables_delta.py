"""The pure iptables port delta (issue 14): changed published ports -> ``-D``/``-I``/``-A`` lines only, and a
rendering/digest equal to a full render of the new ruleset (no root: ``FakeKernel`` plays iptables-restore)."""

from __future__ import annotations

from collections import Counter
from ipaddress import ip_address, ip_interface

from fw_states import net, state
from test_firewall_iptables_render import FakeKernel

from netd.core.model import DesiredState, Endpoint, PortMapping
from netd.core.ruleset import Ruleset
from netd.firewall.iptables_delta import render_ipt_delta
from netd.firewall.iptables_render import Rendered, in_sync, render_chains, render_restore
from netd.firewall.iptables_rule import IP_FAMILIES, PUBLISHED, IpFamily, chain_name
from netd.firewall.rules import build_ruleset

NET = net("a1b2c3d4e5f6a7b8", "br-a", "10.90.1.0/24", "fd00:90:1::/64", name="front", enable_ipv6=True)
C = '-m comment --comment "netd:published-ports" -j DNAT --to-destination'


def ep(i: int, *ports: PortMapping, v6: bool = False) -> Endpoint:
    return Endpoint(
        id=f"e{i:04d}",
        network=NET.id,
        netns=f"n{i}",
        ifname="eth0",
        host_ifname=f"v{i}",
        mac="02:00:00:00:00:01",
        ipv4=ip_interface(f"10.90.1.{10 + i}/24"),
        ipv6=ip_interface(f"fd00:90:1::{10 + i}/64") if v6 else None,
        ports=list(ports),
    )


def pm(host: int, to: int = 80, host_ip: str | None = None) -> PortMapping:
    return PortMapping(host_port=host, container_port=to, host_ip=ip_address(host_ip) if host_ip else None)


def with_eps(*eps: Endpoint) -> DesiredState:
    st = state(NET)
    return DesiredState(networks=st.networks, endpoints={e.id: e for e in eps})


def rendered(rs: Ruleset) -> dict[IpFamily, Rendered]:
    return {f: render_chains(rs, f) for f in IP_FAMILIES}


def kernel_with(rs: Ruleset) -> dict[IpFamily, FakeKernel]:
    out = {}
    for f, r in rendered(rs).items():
        k = FakeKernel()
        k.restore(render_restore(r, k.saved))
        out[f] = k
    return out


def test_published_chain_name() -> None:
    assert chain_name("published") == PUBLISHED


def test_add_and_remove_a_port_are_one_line_each_plus_the_marker() -> None:
    base = [ep(1, pm(8080)), ep(2, pm(8081))]
    old = build_ruleset(with_eps(*base))
    new = build_ruleset(with_eps(*base, ep(3, pm(9000, 90))))
    r_old, r_new = rendered(old), rendered(new)
    d = render_ipt_delta(old, new, r_old)
    assert d is not None and d.rules == 1
    assert d.texts["ipv6"] == ""  # no IPv6 address: the IPv6 chains do not change
    assert d.texts["ipv4"] == (
        "*filter\n"
        f'-D NETD-STATE -m comment --comment "netd:ruleset:{r_old["ipv4"].digest}" -j RETURN\n'
        f'-A NETD-STATE -m comment --comment "netd:ruleset:{r_new["ipv4"].digest}" -j RETURN\n'
        "COMMIT\n"
        "*nat\n"
        f"-A NETD-PUBLISHED -p tcp -m tcp --dport 9000 {C} 10.90.1.13:90\n"
        "COMMIT\n"
    )
    back = render_ipt_delta(new, old, d.rendered)
    assert back is not None
    assert f"-D NETD-PUBLISHED -p tcp -m tcp --dport 9000 {C} 10.90.1.13:90\n" in back.texts["ipv4"]
    assert "-A NETD-PUBLISHED" not in back.texts["ipv4"] and "-I NETD-PUBLISHED" not in back.texts["ipv4"]


def _published(k: FakeKernel) -> list[str]:
    return [r for c, r in k.saved["nat"].rules if c == PUBLISHED]


def test_deltas_on_the_kernel_equal_a_full_apply_and_keep_keyed_rules_first() -> None:
    """A walk of changes (add, remove, a changed target, keyed by host address, IPv6): after each delta the
    kernel holds the rules of a full render (as a multiset), its marker is the full render's digest, in_sync
    holds, and every rule keyed by a host address is above every rule for any address."""
    walk = [
        [ep(1, pm(8080))],
        [ep(1, pm(8080)), ep(2, pm(8081, host_ip="10.0.0.5"))],
        [ep(1, pm(8080)), ep(2, pm(8081, host_ip="10.0.0.5")), ep(3, pm(8082), v6=True)],
        [ep(1, pm(8080, 81)), ep(2, pm(8081, host_ip="10.0.0.5")), ep(3, pm(8082), v6=True)],
        [ep(1, pm(8080, 81)), ep(2, pm(8081, host_ip="10.0.0.5")), ep(4, pm(8081), pm(7000, host_ip="10.0.0.6"))],
        [ep(2, pm(8081, host_ip="10.0.0.5")), ep(4, pm(8081))],
    ]
    prev = build_ruleset(with_eps(*walk[0]))
    kernels, r_prev = kernel_with(prev), rendered(prev)
    for step in walk[1:]:
        new = build_ruleset(with_eps(*step))
        d = render_ipt_delta(prev, new, r_prev)
        assert d is not None
        full = rendered(new)
        for f in IP_FAMILIES:
            kernels[f].restore(d.texts[f])
            assert d.rendered[f].digest == full[f].digest
            assert d.rendered[f].counts() == full[f].counts()
            assert in_sync(full[f], kernels[f].saved)
            want = dict(full[f].tables["nat"])[PUBLISHED]
            have = _published(kernels[f])
            assert Counter(have) == Counter(want)
            keyed = [i for i, r in enumerate(have) if r.startswith("-d ")]
            assert all(i < len(keyed) for i in keyed), have
            assert have == list(dict(d.rendered[f].tables["nat"])[PUBLISHED])  # the kernel's order
        prev, r_prev = new, d.rendered


def test_anything_but_ports_is_not_a_delta() -> None:
    one = build_ruleset(with_eps(ep(1, pm(8080))))
    r = rendered(one)
    assert render_ipt_delta(one, one, r) is None  # nothing changed
    no_ports = build_ruleset(with_eps(ep(1)))
    assert render_ipt_delta(no_ports, one, rendered(no_ports)) is None  # the network starts publishing
    other = build_ruleset(DesiredState(networks={**with_eps().networks, "b": net("b2", "br-b", "10.90.2.0/24")}))
    assert render_ipt_delta(one, other, r) is None  # a network came
    two = build_ruleset(with_eps(ep(1, pm(8080)), ep(2, pm(8081))))
    digest_only = {f: Rendered(x.tables, x.digest) for f, x in r.items()}  # read back from a save
    assert render_ipt_delta(one, two, digest_only) is None
