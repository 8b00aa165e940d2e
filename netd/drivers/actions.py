"""Plan actions of the parent/child drivers (pure data; the reconciler executes them)."""

from __future__ import annotations

from dataclasses import dataclass

from netd.linkspec import ChildSpec, ParentSpec, ShimSpec


@dataclass(frozen=True)
class EnsureParent:
    spec: ParentSpec
    owner: str  # network id
    reason: str


@dataclass(frozen=True)
class EnsureShim:
    spec: ShimSpec
    owner: str
    reason: str


@dataclass(frozen=True)
class EnsureChild:
    spec: ChildSpec
    owner: str  # endpoint id
    reason: str


@dataclass(frozen=True)
class DeleteChildren:
    children: tuple[tuple[str, str], ...]  # (namespace path, ifname)
    owner: str
