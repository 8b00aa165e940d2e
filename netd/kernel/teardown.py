"""Deleting links.  Many at once, raw: every link into one group (one datagram of RTM_NEWLINK marks), then one
RTM_DELLINK for the group (one RCU grace period for all of them instead of one each).  ``delete_named`` does the
same through pyroute2 (one link: one request).

``network rm --force`` and ``netns rm A B C ...`` at 1000 endpoints spent a third of their request in pyroute2
encoding one mark per link and decoding its ack; here the marks are 40 bytes each, sent 256 per datagram.
"""

from __future__ import annotations

import asyncio
import errno
import struct
from collections.abc import Mapping, Sequence
from functools import partial

import structlog
from pyroute2.netlink.exceptions import NetlinkError

from netd.kernel import rtbatch
from netd.kernel.link import IPR, get_link
from netd.kernel.nlerror import KernelOpError, is_errno, kernel_error
from netd.kernel.rtraw import IFINFO, NLATTR, NLM_F_REQUEST, RTM_DELLINK, RTM_NEWLINK, request

log = structlog.get_logger()

# Links to delete are first moved into this group, then removed with one RTM_DELLINK (one RCU grace period for
# the whole batch instead of one per link).  ASCII "netd"; never used for anything else.
TEARDOWN_GROUP = 0x6E657464

NLM_F_ACK = 0x4
IFLA_GROUP = 27
_GONE = frozenset({errno.ENODEV})  # went meanwhile: fine


def _group_attr(group: int) -> bytes:
    return NLATTR.pack(NLATTR.size + 4, IFLA_GROUP) + struct.pack("=I", group)


def mark(seq: int, index: int, group: int = TEARDOWN_GROUP) -> bytes:
    return request(
        RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, IFINFO.pack(0, 0, index, 0, 0) + _group_attr(group)
    )


def delete_group(seq: int, group: int = TEARDOWN_GROUP) -> bytes:
    """RTM_DELLINK without an index: every link of the group."""
    return request(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, IFINFO.pack(0, 0, 0, 0, 0) + _group_attr(group))


def delete_one(seq: int, index: int) -> bytes:
    return request(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, IFINFO.pack(0, 0, index, 0, 0))


async def delete_links(indexes: Mapping[int, str]) -> None:
    """Delete the links ``indexes`` (index -> name) of the calling thread's namespace; missing ones are fine.
    A device kind the group delete does not support (EOPNOTSUPP: no rtnl_link_ops) goes one request each."""
    if not indexes:
        return
    obj = f"{len(indexes)} links"
    marks = [(partial(mark, index=i), f'link "{n}" (mark)') for i, n in indexes.items()]
    await rtbatch.write(obj, marks, "delete", _GONE)
    try:
        await rtbatch.write(obj, [(delete_group, "group delete")], "delete", _GONE)
    except KernelOpError as exc:
        if exc.errno != errno.EOPNOTSUPP:
            raise
        singles = [(partial(delete_one, index=i), f'link "{n}"') for i, n in indexes.items()]
        await rtbatch.write(obj, singles, "delete", _GONE)
    log.info("links_deleted", count=len(indexes), ifnames=sorted(indexes.values()))


# ---------------------------------------------------------------------------------------------- through pyroute2


async def delete_named(ipr: IPR, ifnames: Sequence[str], present: dict[int, str] | None = None) -> int:
    """Delete the named links (missing = fine).  Many at once: move them to one group, delete the group.
    ``present``: index -> name of the links of the namespace, read by the caller (a raw dump: pyroute2 decoding
    every link was most of a 1000-endpoint ``network rm --force``)."""
    wanted = set(ifnames)
    if not wanted:
        return 0
    if present is not None:
        indexes = {index: name for index, name in present.items() if name in wanted}
    else:
        if len(wanted) == 1:  # one cheap get instead of a dump
            msg = await get_link(ipr, next(iter(wanted)))
            found = [msg] if msg is not None else []
        else:
            found = [m async for m in await ipr.link("dump") if m.get_attr("IFLA_IFNAME") in wanted]
        indexes = {int(m["index"]): str(m.get_attr("IFLA_IFNAME")) for m in found}
    if not indexes:
        return 0
    if len(indexes) == 1:
        index, name = next(iter(indexes.items()))
        await _delete_one(ipr, index, name)
        return 1
    results = await asyncio.gather(
        *(ipr.link("set", index=i, group=TEARDOWN_GROUP) for i in indexes), return_exceptions=True
    )
    for res, name in zip(results, indexes.values(), strict=True):
        if isinstance(res, BaseException) and not is_errno(res, errno.ENODEV):
            raise kernel_error(f'link "{name}"', "delete (mark)", res) from res
    try:
        await ipr.link("del", index=0, group=TEARDOWN_GROUP)
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:  # a device kind without rtnl_link_ops: one at a time
            for index, name in indexes.items():
                await _delete_one(ipr, index, name)
        elif exc.code != errno.ENODEV:
            raise kernel_error(f"{len(indexes)} links", "delete", exc) from exc
    log.info("links_deleted", count=len(indexes), ifnames=sorted(indexes.values()))
    return len(indexes)


async def _delete_one(ipr: IPR, index: int, name: str) -> None:
    try:
        await ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise kernel_error(f'link "{name}"', "delete", exc) from exc
    log.info("link_deleted", ifname=name)
