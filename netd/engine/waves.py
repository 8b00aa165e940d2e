"""Which actions of a pass run at the same time: a cold replay creates every namespace and every veth, one
after the other, each awaiting a thread or the kernel in turn; most of that is waiting (a thread to be
scheduled, the kernel's answer), which the other core could fill.

The actions stay in the plan's order.  A run of consecutive actions that only *create* things for one
namespace each (its marker, the namespace, a veth that the observe found missing) is cut into units, one per
namespace (a unit's actions run in order: the marker before the namespace), and up to ``MAX_PARALLEL`` units
run together.  Anything else (bridges, the firewall, repairs, deletions, sysctls) is a step of its own, so
every dependency the plan's order expresses still holds.  Two units never share a namespace (nor its cached
socket in the kernel facade); the rtnl lock serialises the kernel's own work anyway.
"""

from __future__ import annotations

from collections.abc import Callable

from netd.core.actions import Action, EnsureNetns, EnsureVeth, MarkNetns

MAX_PARALLEL = 8

Unit = list[Action]
Step = list[Unit]


def parallel_safe(action: Action) -> bool:
    """Creates for one namespace only: its marker, the namespace, a fresh veth into it."""
    match action:
        case MarkNetns(owned=True) | EnsureNetns():
            return True
        case EnsureVeth(seen_missing=True, reconfigure=False, repair_peer=False):
            return True
    return False


def waves(actions: list[Action], ns_key: Callable[[Action], str]) -> list[Step]:
    """The actions as steps (run one after the other) of units (run together) of actions (run in order)."""
    steps: list[Step] = []
    i = 0
    while i < len(actions):
        if not parallel_safe(actions[i]):
            steps.append([[actions[i]]])
            i += 1
            continue
        units: list[Unit] = []
        keys: set[str] = set()
        while i < len(actions) and parallel_safe(actions[i]):
            key = ns_key(actions[i])
            if units and ns_key(units[-1][0]) == key:
                units[-1].append(actions[i])
            elif key in keys:
                break  # that namespace again, later in the run: it waits for the next step
            else:
                units.append([actions[i]])
                keys.add(key)
            i += 1
        steps += [units[k : k + MAX_PARALLEL] for k in range(0, len(units), MAX_PARALLEL)]
    return steps
