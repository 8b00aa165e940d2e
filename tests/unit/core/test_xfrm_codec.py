"""The XFRM messages netd.kernel.xfrm builds on pyroute2's classes: struct sizes of <linux/xfrm.h> (x86-64) and
the round trip request -> decode (a dump answers with the same structs)."""

from __future__ import annotations

import struct
from dataclasses import replace
from ipaddress import ip_address

from netd.core.ipsecspec import build_xfrm, new_ring
from netd.kernel import xfrm

A, B = ip_address("192.0.2.1"), ip_address("192.0.2.2")
NLMSG = 16


def _body_len(msg: bytes) -> int:
    return struct.unpack_from("=I", msg)[0] - NLMSG


def test_struct_sizes_match_the_kernel_abi() -> None:
    assert xfrm.TMPL.size == 64  # struct xfrm_user_tmpl
    sa = next(iter(build_xfrm(new_ring(5), A, {B}).sas))
    pol = next(iter(build_xfrm(new_ring(5), A, {B}).policies))
    # struct size + attributes (AEAD: 4 + 72 + 20; TMPL: 4 + 64; MARK: 4 + 8)
    assert _body_len(xfrm.sa_request(sa, 1)) == 224 + 96
    assert _body_len(xfrm.sa_delete_request(sa, 1)) == 24
    assert _body_len(xfrm.policy_request(pol, 1)) == 168 + 68 + 12
    assert _body_len(xfrm.policy_delete_request(pol, 1)) == 64 + 12
    assert struct.unpack_from("=H", xfrm.policy_request(pol, 1, update=True), 4)[0] == xfrm.XFRM_MSG_UPDPOLICY


def test_requests_decode_back_to_the_same_objects() -> None:
    want = build_xfrm(new_ring(4097), A, {B})
    for sa in want.sas:
        assert xfrm.decode_sa(xfrm.sa_request(sa, 7)) == sa
    for pol in want.policies:
        assert xfrm.decode_policy(xfrm.policy_request(pol, 7)) == pol


def test_foreign_objects_are_not_read_as_netds() -> None:
    sa = next(iter(build_xfrm(new_ring(9), A, {B}).sas))
    pol = next(iter(build_xfrm(new_ring(9), A, {B}).policies))
    assert xfrm.decode_sa(xfrm.sa_request(replace(sa, reqid=0xD0C4E3), 1)) is None  # Docker's reqid
    assert xfrm.decode_policy(xfrm.policy_request(replace(pol, mark=0xD0C4E3), 1)) is None
    assert xfrm.decode_policy(xfrm.policy_request(replace(pol, reqid=1), 1)) is None
