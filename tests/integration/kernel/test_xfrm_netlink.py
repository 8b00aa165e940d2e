"""netd.kernel.xfrm against this machine's kernel: XFRM netlink is here, ESP is not (ESP traffic: tests/vm).

Policies need no ESP module, so their whole life (add, read back, switch the template, delete) runs here, beside
a foreign policy that must stay untouched.  SAs need ESP: on a kernel without it, the probe and every SA write
fail with the one clear message; on a kernel with it, the SA round trip runs instead."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

import pytest
from kernelenv import Env, sh

from netd.core.errors import KernelError
from netd.core.ipsecspec import DesiredXfrm, build_xfrm, new_ring
from netd.drivers.overlay_crypto import plan_xfrm
from netd.kernel import xfrm
from netd.kernel.facade import Kernel

LOCAL = ip_address("10.66.0.1")
PEERS = {ip_address("10.66.0.2"), ip_address("10.66.0.3")}
FOREIGN = ("src", "10.66.0.1/32", "dst", "10.66.0.2/32", "proto", "udp", "dport", "4789", "dir", "out")


def _xfrm_text(env: Env, what: str) -> str:
    return sh("ip", "-n", env.host_name, "xfrm", what, "show").stdout


def _has_esp(env: Env) -> bool:
    async def body(k: Kernel) -> bool:
        try:
            await k.probe_esp()
        except KernelError as exc:
            assert "this kernel lacks esp4/rfc4106(gcm(aes)): load esp4" in str(exc)
            return False
        return True

    return bool(env.run(body))


def test_policies_round_trip_and_leave_foreign_ones(env: Env) -> None:
    # a foreign policy on the same selector with Docker's mark: never read back, never removed
    sh("ip", "-n", env.host_name, "xfrm", "policy", "add", *FOREIGN, "mark", "0xd0c4e3", "tmpl", "proto", "esp",
       "spi", "0x1234", "reqid", "13681891", "mode", "transport")  # fmt: skip
    ring = new_ring(4097)
    want = build_xfrm(ring, LOCAL, PEERS)

    async def body(k: Kernel) -> tuple[DesiredXfrm, DesiredXfrm, DesiredXfrm, DesiredXfrm]:
        empty = await k.observe_xfrm()
        xs = await xfrm.open_xfrm()
        with xs:
            for pol in want.policies:
                await xfrm.add_policy(xs, pol)
            added = await k.observe_xfrm()
            moved = {replace(p, tmpl_spi=p.tmpl_spi ^ 0x30) for p in want.policies}
            for pol in moved:
                await xfrm.add_policy(xs, pol, update=True)  # the "switch" step of a rotation
            switched = await k.observe_xfrm()
            with pytest.raises(KernelError, match="File exists"):
                await xfrm.add_policy(xs, next(iter(want.policies)))
        await k.apply_xfrm([("del_policy", p) for p in moved])
        await k.apply_xfrm([("del_policy", p) for p in moved])  # deleting what is gone is fine
        return empty, added, switched, await k.observe_xfrm()

    empty, added, switched, after = env.run(body)
    assert empty == DesiredXfrm(frozenset(), frozenset())
    assert added.policies == want.policies and not added.sas
    assert {p.tmpl_spi for p in switched.policies} == {p.tmpl_spi ^ 0x30 for p in want.policies}
    assert after == empty
    left = _xfrm_text(env, "policy")
    assert left.count("dir out") == 1 and "mark 0xd0c4e3/0xffffffff" in left and "spi 0x00001234" in left, left


def test_sas_need_esp_or_round_trip(env: Env) -> None:
    ring = new_ring(12)
    want = build_xfrm(ring, LOCAL, PEERS)
    has_esp = _has_esp(env)

    async def body(k: Kernel) -> DesiredXfrm:
        await k.apply_xfrm(plan_xfrm(want, await k.observe_xfrm()))
        return await k.observe_xfrm()

    if not has_esp:
        with pytest.raises(KernelError, match=r"load esp4 \(modprobe esp4\) or run on a kernel with IPsec ESP"):
            env.run(body)
        assert _xfrm_text(env, "state") == ""
        return
    got = env.run(body)
    assert got == want

    async def clean(k: Kernel) -> DesiredXfrm:
        await k.apply_xfrm(plan_xfrm(DesiredXfrm(frozenset(), frozenset()), await k.observe_xfrm()))
        return await k.observe_xfrm()

    assert env.run(clean) == DesiredXfrm(frozenset(), frozenset())
