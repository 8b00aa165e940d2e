"""Which actions of a pass run together (netd.engine.waves): creates for different namespaces, in the plan's
order otherwise."""

from __future__ import annotations

from netd.core.actions import Action, EnsureBridge, EnsureNetns, EnsureVeth, MarkNetns, RemoveNetns
from netd.core.linkspec import BridgeSpec, NsRef, VethSpec
from netd.engine import waves


def _veth(ns: str, n: int, **kw: bool) -> EnsureVeth:
    spec = VethSpec(f"veth{n}", f"ep{n}", "br0", None, NsRef(f"/run/netns/{ns}"), "eth0", "02:42:00:00:00:01", ())
    return EnsureVeth(
        spec,
        owner=f"ep{n}",
        reason="missing",
        seen_missing=kw.get("seen", True),
        **{k: v for k, v in kw.items() if k != "seen"},
    )


def _key(action: Action) -> str:
    if isinstance(action, EnsureVeth):
        return action.spec.netns.path
    return f"/run/netns/{getattr(action, 'name', '')}"


def test_creates_for_different_namespaces_run_together_in_units_per_namespace() -> None:
    bridge = EnsureBridge(BridgeSpec("br0", "net1", None, ()), owner="net1", reason="missing")
    acts: list[Action] = [
        MarkNetns("a", owned=True, owner="a"),
        EnsureNetns("a", owner="a"),
        MarkNetns("b", owned=True, owner="b"),
        EnsureNetns("b", owner="b"),
        bridge,
        _veth("a", 1),
        _veth("b", 2),
        _veth("a", 3),  # a's namespace again in the same run: waits for the next step
        RemoveNetns("c", owner="c"),
    ]
    steps = waves.waves(acts, _key)
    assert steps == [
        [[acts[0], acts[1]], [acts[2], acts[3]]],
        [[bridge]],
        [[acts[5]], [acts[6]]],
        [[acts[7]]],
        [[acts[8]]],
    ]


def test_repairs_and_reconfigures_stay_alone_and_steps_hold_at_most_max_parallel() -> None:
    assert not waves.parallel_safe(_veth("a", 1, seen=False))
    assert not waves.parallel_safe(_veth("a", 1, reconfigure=True))
    assert not waves.parallel_safe(_veth("a", 1, repair_peer=True))
    assert not waves.parallel_safe(MarkNetns("a", owned=False, owner="a"))
    many: list[Action] = [_veth(f"n{i}", i) for i in range(waves.MAX_PARALLEL + 3)]
    steps = waves.waves(many, _key)
    assert [len(s) for s in steps] == [waves.MAX_PARALLEL, 3]
    assert [a for s in steps for u in s for a in u] == many  # the plan's order kept
