"""Encrypted overlay networks, pure: the key rotation as ordered stages, the drift between desired and observed
XFRM state, the ordered actions that repair it, and the nftables statements that mark/guard a VNI.

Rotation from generation ``g`` to ``g+1`` (Docker's dance, with a barrier between the stages):

1. **accept**  every node holds keys {g, g+1}, sends with g: it installs the SAs of g+1 (both directions);
2. **switch**  once *every* node has acked stage 1: every node sends with g+1 (its out policies' templates
   move to the SPIs of g+1, one XFRM_MSG_UPDPOLICY each); a packet sent with g+1 finds its receiver ready;
3. **prune**   once *every* node has acked stage 2: no one sends with g, its SAs are removed.

No packet is lost: at every instant, every key some node sends with is installed on every receiver.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from netd.core.errors import InvalidError
from netd.core.ipsecspec import DesiredXfrm, EspPolicy, EspSA, KeyRing, check_spis, new_master_key, owner_tag

OPT_ENCRYPTED = "encrypted"
_TRUE = frozenset({"", "true", "1", "yes", "on"})  # Docker's CLI sends ``--opt encrypted`` as "encrypted": ""
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_encrypted(options: Mapping[str, str]) -> bool:
    """``-o encrypted`` / ``encrypted=true`` (also "", 1, yes, on) -> True; false/0/no/off or absent -> False."""
    raw = options.get(OPT_ENCRYPTED)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidError(
        f"option encrypted={raw!r}: give -o encrypted (or encrypted=true) to encrypt the network, or leave it out",
        field=OPT_ENCRYPTED,
    )


def normalized_options(options: Mapping[str, str]) -> dict[str, str]:
    """The options as stored and shown by ``inspect``: ``"encrypted": "true"`` when encrypted (as Docker shows
    it), no ``encrypted`` key at all when not."""
    out = {k: v for k, v in options.items() if k != OPT_ENCRYPTED}
    if parse_encrypted(options):
        out[OPT_ENCRYPTED] = "true"
    return out


class Stage(StrEnum):
    ACCEPT = "accept"
    SWITCH = "switch"
    PRUNE = "prune"


@dataclass(frozen=True)
class RotationStep:
    stage: Stage
    ring: KeyRing  # what every node must hold at the end of this stage


def plan_rotation(ring: KeyRing, new_key: bytes | None = None) -> list[RotationStep]:
    """The three rings a rotation of ``ring`` passes through; each is applied on all nodes before the next."""
    if len(ring.keys) != 1:
        raise ValueError(f"vni {ring.vni}: a rotation is already under way (generations {ring.generations})")
    old = ring.tx
    new = max(ring.generations) + 1
    key = new_key if new_key is not None else new_master_key()
    both = (*ring.keys, (new, key))
    return [
        RotationStep(Stage.ACCEPT, KeyRing(ring.vni, both, old)),
        RotationStep(Stage.SWITCH, KeyRing(ring.vni, both, new)),
        RotationStep(Stage.PRUNE, KeyRing(ring.vni, ((new, key),), new)),
    ]


def next_step(
    steps: list[RotationStep], done: int, acks: Mapping[str, int], nodes: Collection[str]
) -> RotationStep | None:
    """The step to publish after ``done`` steps (0 = none yet), or None while a node has not acked step ``done``.

    ``acks`` maps a node to the number of steps it has applied; nodes that left do not hold a rotation up."""
    if done >= len(steps):
        return None
    if done > 0 and any(acks.get(n, 0) < done for n in nodes):
        return None
    return steps[done]


# ---------------------------------------------------------------------------------------------- drift

Action = tuple[Literal["add_sa", "del_sa", "add_policy", "update_policy", "del_policy"], EspSA | EspPolicy]


@dataclass(frozen=True)
class XfrmDrift:
    missing_sas: frozenset[EspSA]
    stray_sas: frozenset[EspSA]  # owned by netd, not desired (or desired with other keys)
    missing_policies: frozenset[EspPolicy]
    changed_policies: frozenset[EspPolicy]  # desired value of a policy whose template differs
    stray_policies: frozenset[EspPolicy]

    @property
    def clean(self) -> bool:
        return not (
            self.missing_sas
            or self.stray_sas
            or self.missing_policies
            or self.changed_policies
            or self.stray_policies
        )

    def describe(self) -> list[str]:
        return (
            [f"missing {x}" for x in sorted(self.missing_sas, key=str)]
            + [f"stray {x}" for x in sorted(self.stray_sas, key=str)]
            + [f"missing {x}" for x in sorted(self.missing_policies, key=str)]
            + [f"changed {x}" for x in sorted(self.changed_policies, key=str)]
            + [f"stray {x}" for x in sorted(self.stray_policies, key=str)]
        )


def diff_xfrm(desired: DesiredXfrm, observed: DesiredXfrm) -> XfrmDrift:
    """``observed`` holds only netd's own objects (the kernel layer filters by reqid)."""
    want_pol = {p.ident: p for p in desired.policies}
    have_pol = {p.ident: p for p in observed.policies}
    return XfrmDrift(
        missing_sas=desired.sas - observed.sas,
        stray_sas=observed.sas - desired.sas,
        missing_policies=frozenset(p for i, p in want_pol.items() if i not in have_pol),
        changed_policies=frozenset(p for i, p in want_pol.items() if i in have_pol and have_pol[i] != p),
        stray_policies=frozenset(p for i, p in have_pol.items() if i not in want_pol),
    )


def plan_xfrm(desired: DesiredXfrm, observed: DesiredXfrm) -> list[Action]:
    """Ordered so that nothing is sent with a key its receiver lacks and no SA is removed while a policy names it:
    SAs are added first, then policies added or switched, then stray policies and finally stray SAs removed.
    An SA whose (destination, SPI) is taken by a different observed SA (other key) is removed before re-adding."""
    check_spis(desired.sas)
    drift = diff_xfrm(desired, observed)
    wanted = {d.ident for d in drift.missing_sas}
    replaced = [sa for sa in drift.stray_sas if sa.ident in wanted]
    actions: list[Action] = [("del_sa", sa) for sa in sorted(replaced, key=str)]
    actions += [("add_sa", sa) for sa in sorted(drift.missing_sas, key=str)]
    actions += [("add_policy", p) for p in sorted(drift.missing_policies, key=str)]
    actions += [("update_policy", p) for p in sorted(drift.changed_policies, key=str)]
    actions += [("del_policy", p) for p in sorted(drift.stray_policies, key=str)]
    actions += [("del_sa", sa) for sa in sorted(drift.stray_sas, key=str) if sa not in replaced]
    return actions


# ---------------------------------------------------------------------------------------------- firewall


def build_mark_rules(vni: int, port: int = 4789) -> tuple[str, str]:
    """nftables statements for an encrypted VNI: (output, input).

    Output (in a ``type route hook output`` chain, so the kernel re-routes and finds the XFRM policy): mark the
    network's VXLAN packets with its tag.  Input (``type filter hook input``): drop its VXLAN packets that did
    not arrive through IPsec.  The VNI sits in bits 32-55 of the VXLAN header, after the 8-byte UDP header."""
    tag = owner_tag(vni)
    match = f"udp dport {port} @th,96,24 {vni}"
    return f"{match} meta mark set 0x{tag:08x}", f"{match} meta ipsec missing drop"
