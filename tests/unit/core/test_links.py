"""Issue 12 item 10: Docker's legacy --link (pure parts: pairs, hosts files, firewall accepts with icc off)."""

from ipaddress import ip_interface, ip_network

from netd.core.links import hosts_files, link_pairs
from netd.core.model import DesiredState, Endpoint, IpamConfig, Netns, Network
from netd.firewall.iptables_render import render_chains
from netd.firewall.nft_render import render_nft_json
from netd.firewall.rules import build_ruleset


def _state(icc: bool) -> DesiredState:
    net = Network(
        id="d" * 64,
        name="bridge",
        bridge="netd0",
        is_default=True,
        icc=icc,
        ipam=[IpamConfig(subnet=ip_network("172.17.0.0/16"), gateway=ip_interface("172.17.0.1/16").ip)],
    )

    def ep(ns: str, last: int, links: list[str]) -> Endpoint:
        return Endpoint(
            id=f"ep-{ns}",
            network=net.id,
            netns=ns,
            ifname="eth0",
            host_ifname=f"v-{ns}",
            mac="02:42:ac:11:00:02",
            ipv4=ip_interface(f"172.17.0.{last}/16"),
            links=links,
        )

    eps = [ep("db", 2, []), ep("web", 3, ["db:database"]), ep("other", 4, [])]
    return DesiredState(
        networks={"bridge": net},
        netns={e.netns or "": Netns(name=e.netns or "") for e in eps},
        endpoints={e.id: e for e in eps},
    )


def test_pairs_and_hosts_both_ways() -> None:
    st = _state(icc=True)
    pairs = link_pairs(st, st.networks["bridge"])
    assert [(p.recipient.netns, p.source.netns, p.alias) for p in pairs] == [("web", "db", "database")]
    files = hosts_files(st)
    assert set(files) == {"web", "db"}
    assert "172.17.0.2\tdatabase db\n" in files["web"] and "127.0.0.1\tlocalhost" in files["web"]
    assert "172.17.0.3\tweb\n" in files["db"]
    del st.endpoints["ep-db"]  # the linked namespace left the bridge: the link no longer holds
    assert hosts_files(st) == {}


def test_icc_off_accepts_only_the_linked_pair_in_both_backends() -> None:
    rs = build_ruleset(_state(icc=False))
    nft = str(render_nft_json(rs))
    for a, b in (("172.17.0.3", "172.17.0.2"), ("172.17.0.2", "172.17.0.3")):
        assert f"'{a}', 'len': 32" in nft or a in nft
        assert b in nft
    assert "172.17.0.4" not in nft
    ipt = str(render_chains(rs, "ipv4"))
    assert "-s 172.17.0.3/32 -d 172.17.0.2/32" in ipt and "-s 172.17.0.2/32 -d 172.17.0.3/32" in ipt
    assert "172.17.0.4" not in ipt
    assert "172.17.0.3" not in str(render_nft_json(build_ruleset(_state(icc=True))))  # icc on: nothing to allow
