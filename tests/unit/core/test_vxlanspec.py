"""The overlay data plane's pure contract: validation, the device drift plan, the entry plan, the raw decoder."""

from __future__ import annotations

import socket
from dataclasses import replace
from ipaddress import ip_address

import pytest

from netd.core.errors import InvalidError
from netd.core.vxlanspec import (
    FdbEntry,
    NeighEntry,
    ObservedEntries,
    ObservedVxlan,
    PeerEntry,
    VxlanSpec,
    overlay_mtu,
    plan_entries,
    plan_vxlan,
    validate_ifname,
    validate_mtu,
    validate_port,
    validate_vni,
)
from netd.kernel.ndraw import NDA_DST, NDA_LLADDR, NDMSG, NTF_SELF, NUD_PERMANENT, decode_fdb, decode_neigh
from netd.kernel.rtraw import NLATTR

A, B = ip_address("192.0.2.1"), ip_address("192.0.2.2")
MAC1, MAC2 = "02:42:0a:00:00:02", "02:42:0a:00:00:03"


def spec(**kw: object) -> VxlanSpec:
    base: dict[str, object] = {"ifname": "vx-net1", "owner": "net1", "vni": 4097, "local": A, "master": "br-net1"}
    return VxlanSpec(**{**base, **kw})  # type: ignore[arg-type]


def seen(**kw: object) -> ObservedVxlan:
    base: dict[str, object] = {
        "index": 7,
        "ifname": "vx-net1",
        "owner": "net1",
        "alias": "netd:net1",
        "vni": 4097,
        "port": 4789,
        "local": A,
        "group": None,
        "learning": False,
        "proxy": True,
        "l2miss": False,
        "l3miss": False,
        "mtu": 1450,
        "up": True,
        "master": 5,
    }
    return ObservedVxlan(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("check", "value", "needle"),
    [
        (validate_vni, 0, "1-16777215"),
        (validate_vni, 16777216, "1-16777215"),
        (validate_vni, True, "1-16777215"),
        (validate_port, 0, "1-65535"),
        (validate_port, 65536, "1-65535"),
        (validate_mtu, 67, "68-65535"),
        (validate_mtu, 65536, "68-65535"),
        (validate_ifname, "x" * 16, "1-15 bytes"),
        (validate_ifname, "", "1-15 bytes"),
        (validate_ifname, "vx/1", "1-15 bytes"),
        (validate_ifname, "vxé" * 5, "1-15 bytes"),  # 15 characters, 20 bytes
    ],
)
def test_validation_names_the_limit(check: object, value: object, needle: str) -> None:
    with pytest.raises(InvalidError, match=needle):
        check(value)  # type: ignore[operator]


def test_validation_accepts_the_edges() -> None:
    assert validate_vni(1) == 1 and validate_vni(16777215) == 16777215
    assert validate_port(1) == 1 and validate_port(65535) == 65535
    assert validate_mtu(68) == 68 and validate_mtu(65535) == 65535
    assert validate_ifname("x" * 15) == "x" * 15


def test_spec_and_peer_refuse_bad_fields() -> None:
    with pytest.raises(InvalidError, match="vni") as exc:
        spec(vni=0)
    assert exc.value.field == "vni"
    with pytest.raises(InvalidError, match="master"):
        spec(master="b" * 16)
    with pytest.raises(InvalidError, match="local"):
        spec(local=ip_address("0.0.0.0"))
    with pytest.raises(InvalidError, match="unicast"):
        PeerEntry("01:00:5e:00:00:01", (), B)
    with pytest.raises(InvalidError, match="unicast"):
        PeerEntry("00:00:00:00:00:00", (), B)
    with pytest.raises(InvalidError, match="no flooding"):
        PeerEntry(MAC1, (), ip_address("239.1.1.1"))
    assert PeerEntry("02:42:0A:00:00:02", (), B).mac == MAC1  # normalised


def test_overlay_mtu() -> None:
    assert overlay_mtu(1500, A) == 1450
    assert overlay_mtu(1500, ip_address("2001:db8::1")) == 1430
    assert overlay_mtu(9000, A) == 8950
    with pytest.raises(InvalidError, match="underlay mtu"):
        overlay_mtu(100, A)


def test_plan_vxlan() -> None:
    assert not plan_vxlan(spec(), seen(), 1450, 5)
    d = plan_vxlan(spec(), seen(mtu=1400, master=None, up=False, alias=None), 1450, 5)
    assert d.recreate == () and set(d.change) == {"alias", "mtu", "master", "up"}
    d = plan_vxlan(spec(port=8472), seen(vni=1, local=B, learning=True, proxy=False, l3miss=True), 1450, 5)
    assert len(d.recreate) == 6 and any("vni 1 != 4097" in r for r in d.recreate)
    assert plan_vxlan(spec(), seen(group=ip_address("239.1.1.1")), 1450, 5).recreate == (
        "group/remote 239.1.1.1 set",
    )


def test_plan_entries_puts_missing_and_wrong_deletes_the_rest() -> None:
    p1 = PeerEntry(MAC1, (ip_address("10.0.9.2"), ip_address("fd00::2")), A)
    p2 = PeerEntry(MAC2, (ip_address("10.0.9.3"),), B)
    empty = plan_entries([p1, p2], ObservedEntries())
    assert [e.mac for e in empty.fdb_put] == [MAC1, MAC2] and len(empty.neigh_put) == 3
    exact = ObservedEntries(
        (FdbEntry(MAC1, A), FdbEntry(MAC2, B)),
        (
            NeighEntry(ip_address("10.0.9.2"), MAC1),
            NeighEntry(ip_address("fd00::2"), MAC1),
            NeighEntry(ip_address("10.0.9.3"), MAC2),
        ),
    )
    assert not plan_entries([p1, p2], exact)
    drifted = ObservedEntries(
        (FdbEntry(MAC1, B), FdbEntry(MAC2, B), FdbEntry(MAC2, A), FdbEntry("00:00:00:00:00:00", A)),
        (
            NeighEntry(ip_address("10.0.9.2"), MAC1, permanent=False),
            NeighEntry(ip_address("10.0.9.3"), MAC2),
            NeighEntry(ip_address("10.0.9.99"), MAC2),
        ),
    )
    plan = plan_entries([p1, p2], drifted)
    assert plan.fdb_put == (FdbEntry(MAC1, A), FdbEntry(MAC2, B))  # wrong node; MAC2 had two remotes
    assert {e.mac for e in plan.fdb_del} == {"00:00:00:00:00:00", MAC2}
    assert {str(e.ip) for e in plan.neigh_put} == {"10.0.9.2", "fd00::2"}
    assert [str(e.ip) for e in plan.neigh_del] == ["10.0.9.99"]
    removed = plan_entries([], exact)
    assert len(removed.fdb_del) == 2 and len(removed.neigh_del) == 3 and not removed.fdb_put


def test_plan_entries_refuses_conflicting_peers() -> None:
    with pytest.raises(InvalidError, match="on two nodes"):
        plan_entries([PeerEntry(MAC1, (), A), PeerEntry(MAC1, (), B)], ObservedEntries())
    with pytest.raises(InvalidError, match="claimed by"):
        ip = (ip_address("10.0.9.2"),)
        plan_entries([PeerEntry(MAC1, ip, A), PeerEntry(MAC2, ip, B)], ObservedEntries())


def _nd(family: int, index: int, state: int, flags: int, dst: bytes | None, mac: bytes | None) -> bytes:
    body = NDMSG.pack(family, index, state, flags, 0)
    for atype, value in ((NDA_DST, dst), (NDA_LLADDR, mac)):
        if value is not None:
            attr = NLATTR.pack(NLATTR.size + len(value), atype) + value
            body += attr + b"\0" * (-len(attr) % 4)
    return body


def test_raw_decoders() -> None:
    mac = bytes.fromhex("02420a000002")
    fdb = _nd(socket.AF_BRIDGE, 7, NUD_PERMANENT, NTF_SELF, B.packed, mac)
    assert decode_fdb(fdb, 0, len(fdb), 7) == FdbEntry(MAC1, B)
    bridge_view = _nd(socket.AF_BRIDGE, 7, NUD_PERMANENT, 0x04, None, mac)  # NTF_MASTER: the bridge's entry
    assert decode_fdb(bridge_view, 0, len(bridge_view), 7) is None
    assert decode_fdb(fdb, 0, len(fdb), 8) is None
    v6 = ip_address("fd00::2")
    neigh = _nd(socket.AF_INET6, 7, 0x04, 0, v6.packed, mac)
    assert decode_neigh(neigh, 0, len(neigh), 7) == NeighEntry(v6, MAC1, permanent=False)
    mcast = _nd(socket.AF_INET6, 7, 0x40, 0, ip_address("ff02::1").packed, bytes.fromhex("333300000001"))
    assert decode_neigh(mcast, 0, len(mcast), 7) is None
    incomplete = _nd(socket.AF_INET, 7, 0x01, 0, ip_address("10.0.9.2").packed, None)
    assert decode_neigh(incomplete, 0, len(incomplete), 7) is None


def test_spec_replace_revalidates() -> None:
    with pytest.raises(InvalidError, match="port"):
        replace(spec(), port=0)


def test_raw_requests_carry_what_the_decoders_read() -> None:
    from netd.kernel.ndraw import RTM_DELNEIGH, RTM_NEWNEIGH, fdb_del, fdb_put, neigh_del, neigh_put
    from netd.kernel.rtraw import messages

    v6 = ip_address("fd00::2")
    for data, mtype in (
        (fdb_put(5, 7, FdbEntry(MAC1, B)), RTM_NEWNEIGH),
        (neigh_put(6, 7, NeighEntry(v6, MAC1)), RTM_NEWNEIGH),
        (fdb_del(7, 7, MAC1), RTM_DELNEIGH),
        (neigh_del(8, 7, v6), RTM_DELNEIGH),
    ):
        (msg,) = messages(data)
        assert msg.type == mtype and msg.flags & 0x4  # acked
        if mtype == RTM_NEWNEIGH:
            assert msg.flags & 0x100 and msg.flags & 0x400  # NLM_F_REPLACE | NLM_F_CREATE
    put = fdb_put(1, 7, FdbEntry(MAC1, B))
    assert decode_fdb(put, 16, len(put), 7) == FdbEntry(MAC1, B)
    put = neigh_put(1, 7, NeighEntry(v6, MAC1))
    assert decode_neigh(put, 16, len(put), 7) == NeighEntry(v6, MAC1)


def test_vtep_family_must_match_the_device() -> None:
    from netd.core.vxlanspec import check_vtep_family

    check_vtep_family([PeerEntry(MAC1, (), B)], A)
    check_vtep_family([PeerEntry(MAC1, (), B)], None)
    with pytest.raises(InvalidError, match="one IP version"):
        check_vtep_family([PeerEntry(MAC1, (), ip_address("2001:db8::2"))], A)
