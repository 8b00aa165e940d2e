"""Shared by the firewall benchmarks: run one measurement per backend inside a throw-away namespace."""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from fwtopo import NetnsLoop

from netd.firewall.base import FirewallBackend
from netd.firewall.iptables import IptablesBackend
from netd.firewall.nftables import NftablesBackend

BACKENDS: dict[str, Callable[[], FirewallBackend]] = {
    "nftables": NftablesBackend,
    "iptables-nft": lambda: IptablesBackend("nft"),
    "iptables-legacy": lambda: IptablesBackend("legacy"),
}

Bench = Callable[[NetnsLoop, FirewallBackend], list[dict[str, Any]]]


def med(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)


def each_backend(ns: str, labels: Sequence[str], bench: Bench) -> dict[str, list[dict[str, Any]]]:
    """``bench(loop, backend)`` for each backend, in the namespace ``ns`` made for it and removed afterwards."""
    out: dict[str, list[dict[str, Any]]] = {}
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        loop = NetnsLoop(f"/run/netns/{ns}")
        try:
            for label in labels:
                backend = BACKENDS[label]()
                try:
                    out[label] = bench(loop, backend)
                finally:
                    close = getattr(backend, "close", None)
                    if close is not None:
                        close()
        finally:
            loop.stop()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return out
