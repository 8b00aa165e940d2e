"""The packet-filter half of encrypted overlays: netd's own ``table inet netd_esp`` (issue 17).

Per encrypted VNI (statements from :func:`netd.drivers.overlay_crypto.build_mark_rules`):

- output (``type route`` chain, so the kernel routes again and finds the XFRM policy): its VXLAN packets to a
  node with an installed policy get the network's mark (the policy matches on it); to any other node they are
  dropped, so a packet of an encrypted network is never sent in clear while a peer's SAs are being made;
- input: its VXLAN packets that did not come through IPsec are dropped.

Plain overlays' VXLAN packets match none of these.  The table is replaced whole in one nft transaction (netd's
main firewall backend owns ``inet netd`` / ``bridge netd`` and never touches this one, and the other way
round).  libnftables runs on one thread of its own, made in the daemon's network namespace; the text holds only
numbers and addresses netd computed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from netd.core.errors import FirewallError
from netd.drivers.overlay_crypto import build_mark_rules

TABLE = "netd_esp"


@dataclass(frozen=True)
class EspGuard:
    vni: int
    peers: tuple[IPv4Address, ...]  # nodes this one has an XFRM policy for (their underlay addresses)


def render(guards: Sequence[EspGuard], port: int) -> str:
    """The nft script that makes ``table inet netd_esp`` exactly this (no guard: no table)."""
    out = [f"table inet {TABLE} {{}}", f"delete table inet {TABLE}"]
    if not guards:
        return "\n".join(out) + "\n"
    sets, outs, ins = [], [], []
    for g in sorted(guards, key=lambda g: g.vni):
        mark, guard = build_mark_rules(g.vni, port)
        elements = f" elements = {{ {', '.join(str(p) for p in sorted(g.peers))} }};" if g.peers else ""
        sets.append(f"  set peers_{g.vni} {{ type ipv4_addr;{elements} }}")
        match = mark.split(" meta mark set ")[0]
        outs.append(f"    {match} ip daddr != @peers_{g.vni} drop")
        outs.append(f"    {mark}")
        ins.append(f"    {guard}")
    out += [
        f"table inet {TABLE} {{",
        *sets,
        "  chain out {",
        "    type route hook output priority mangle; policy accept;",
        *outs,
        "  }",
        "  chain in {",
        "    type filter hook input priority filter; policy accept;",
        *ins,
        "  }",
        "}",
    ]
    return "\n".join(out) + "\n"


class EspMarks:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netd-esp-nft")
        self._nft: Any = None
        self.applied: str | None = None

    def _cmd(self, script: str) -> None:
        if self._nft is None:
            try:
                import nftables

                self._nft = nftables.Nftables()
            except (ImportError, OSError) as exc:
                raise FirewallError(
                    f"encrypted overlays need nftables for their mark rules ({exc}); install libnftables1"
                ) from exc
        rc, _out, err = self._nft.cmd(script)
        if rc != 0:
            raise FirewallError(
                f"nftables: applying table inet {TABLE} failed: {err.strip() or rc}; check `nft list ruleset`"
            )

    async def apply(self, guards: Sequence[EspGuard], port: int, force: bool = False) -> bool:
        """Replace the table when it differs from the last one applied (or ``force``); True if applied."""
        script = render(guards, port)
        if script == self.applied and not force:
            return False
        await asyncio.get_running_loop().run_in_executor(self._executor, self._cmd, script)
        self.applied = script
        return True

    def close(self) -> None:
        def drop() -> None:
            self._nft = None

        self._executor.submit(drop).result()
        self._executor.shutdown(wait=True)
