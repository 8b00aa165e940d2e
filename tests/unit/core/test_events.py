"""The raw event decoder and the link tracker: synthetic rtnetlink datagrams, no kernel."""

from __future__ import annotations

import socket
import struct
from ipaddress import ip_address

import pytest

from netd.kernel.events import (
    DUMP_SEQ,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_NEWLINK,
    LinkMsg,
    LinkTracker,
    decode,
)

OWN_PID = 4242


def _attr(atype: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), atype) + value
    return raw + b"\0" * (-len(raw) % 4)


def _msg(mtype: int, body: bytes, seq: int = 0, pid: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, seq, pid) + body


def link(mtype: int, index: int, name: str, up: bool = True, master: int = 0, **kw: int) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, 1 if up else 0, 0xFFFFFFFF) + _attr(3, name.encode() + b"\0")
    if master:
        body += _attr(10, struct.pack("=I", master))
    return _msg(mtype, body, **kw)


def addr(mtype: int, index: int, ip: str, prefixlen: int, scope: int = 0) -> bytes:
    a = ip_address(ip)
    family = socket.AF_INET if a.version == 4 else socket.AF_INET6
    body = struct.pack("=BBBBI", family, prefixlen, 0, scope, index) + _attr(1, a.packed)
    if a.version == 4:
        body += _attr(2, a.packed)
    return _msg(mtype, body)


def reasons(tracker: LinkTracker, data: bytes) -> list[str | None]:
    return [tracker.reason(m) for _, m in decode(data, OWN_PID)]


def test_a_dump_seeds_and_events_are_told_apart() -> None:
    dump = link(RTM_NEWLINK, 7, "br0", seq=DUMP_SEQ, pid=OWN_PID) + link(
        RTM_NEWLINK, 8, "vh1", master=7, seq=DUMP_SEQ, pid=OWN_PID
    )
    decoded = list(decode(dump, OWN_PID))
    assert decoded == [(True, LinkMsg(False, 7, "br0", True, None)), (True, LinkMsg(False, 8, "vh1", True, 7))]
    tracker = LinkTracker()
    for _, m in decoded:
        assert isinstance(m, LinkMsg)
        tracker.remember(m)
    # another process's request with the same sequence number is an event, not our dump
    assert [mine for mine, _ in decode(link(RTM_NEWLINK, 9, "x", seq=DUMP_SEQ, pid=77), OWN_PID)] == [False]
    assert reasons(tracker, link(RTM_NEWLINK, 8, "vh1", master=7)) == [None]  # a no-op notification
    assert reasons(tracker, link(RTM_NEWLINK, 8, "vh1", up=False, master=7)) == ["link_down:vh1"]
    assert reasons(tracker, link(RTM_NEWLINK, 8, "vh1", up=False)) == ["link_master_changed:vh1"]
    assert reasons(tracker, link(RTM_NEWLINK, 8, "vh2", up=False)) == ["link_renamed:vh1"]
    assert reasons(tracker, link(RTM_NEWLINK, 20, "new0")) == [None]  # a new link
    assert reasons(tracker, link(RTM_DELLINK, 20, "new0")) == ["link_deleted:new0"]
    assert 20 not in tracker.links


def test_deleted_addresses_but_not_link_local_ones() -> None:
    tracker = LinkTracker()
    tracker.remember(LinkMsg(False, 7, "br0", True, None))
    data = (
        addr(RTM_DELADDR, 7, "10.1.0.1", 24)
        + addr(RTM_DELADDR, 7, "fd00::1", 64)
        + addr(RTM_DELADDR, 7, "fe80::1", 64, scope=253)
        + addr(20, 7, "10.1.0.9", 24)  # RTM_NEWADDR: not drift
    )
    assert reasons(tracker, data) == ["addr_deleted:br0:10.1.0.1/24", "addr_deleted:br0:fd00::1/64", None, None]


def test_errors_and_malformed_datagrams_raise() -> None:
    err = _msg(2, struct.pack("=i", -16) + b"\0" * 16, seq=DUMP_SEQ, pid=OWN_PID)
    with pytest.raises(OSError, match="link dump"):
        list(decode(err, OWN_PID))
    ack = _msg(2, struct.pack("=i", 0) + b"\0" * 16, seq=DUMP_SEQ, pid=OWN_PID)
    assert list(decode(ack, OWN_PID)) == []
    with pytest.raises(OSError, match="malformed"):
        list(decode(struct.pack("=IHHII", 8, RTM_NEWLINK, 0, 0, 0), OWN_PID))
