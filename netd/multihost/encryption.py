"""Encrypted overlay networks on this node (issue 17): XFRM states and policies, the nft guard table, the acks
and the rotation steps, all from the cluster cache.

One pass (:meth:`Encryption.sync`), run after every cluster change, every local change and on a timer:

1. for each encrypted network with endpoints here: its keys (``/keys/<id>``, made by the first node that needs
   them), its peers (alive nodes with endpoints on it whose ack, hence boot epoch, is known);
2. the XFRM state wanted for all of them (``ipsecspec.build_xfrm``: SAs of every generation held, both ways, one
   out policy per peer naming the generation sent with), compared with netd's own SAs and policies in the kernel
   and repaired in order (``overlay_crypto.plan_xfrm``); a node that left or whose network went loses them here;
3. ``table inet netd_esp`` (``netd.firewall.esp_marks``): mark to peers, drop to anyone else, drop cleartext in;
4. the ack of the step applied (``/key-acks/<id>/<node>``, under this node's lease, with its boot epoch);
5. the next rotation step of a network whose participants all acked (timer due, or under way).

The boot epoch lives in ``run_dir`` (tmpfs): a restarted daemon keeps it (the kernel kept its SAs and their
sequence numbers); a rebooted node gets a new one, so every peer derives new SAs for it (a reused SA would be
dropped by the peers' replay windows).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from netd.cluster.enckeys import (
    ClusterKeys,
    acked,
    due,
    participants,
    ring_of,
    rotating,
    waiting_for,
)
from netd.cluster.errors import ClusterUnavailableError
from netd.cluster.records import KeyAck, NetworkKeys
from netd.core.errors import ConflictError, InvalidError, NetdError
from netd.core.ipsecspec import DesiredXfrm, build_xfrm, merge
from netd.drivers.overlay import OVERLAY
from netd.drivers.overlay_crypto import plan_xfrm
from netd.firewall.esp_marks import EspGuard, EspMarks

if TYPE_CHECKING:
    from .node import MultiHost

log = structlog.get_logger("netd.multihost")

TICK = 30.0  # seconds between passes without a change (drift repair, the rotation timer)
ROTATE_WAIT = 50.0  # rotate-key waits this long (by default) for the three steps to be applied everywhere


def boot_epoch(run_dir: Path) -> int:
    path = run_dir / "esp-epoch"
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    epoch = secrets.randbits(31)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{epoch}\n")
    tmp.replace(path)
    return epoch


class Encryption:
    def __init__(self, mh: MultiHost) -> None:
        assert mh.cluster is not None
        self.mh = mh
        self.cluster = mh.cluster
        self.keys = ClusterKeys(mh.cluster.store, mh.cluster.keys)
        self.marks = EspMarks()
        self.epoch = boot_epoch(mh.daemon.settings.run_dir)
        self.interval = mh.cfg.encryption_key_rotation
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.last_error = ""
        self._held = True  # something may be in the kernel (a restart): the first pass looks

    # -- the cache ---------------------------------------------------------------------------------------------

    def _of(self, kind: str, cls: type[Any]) -> dict[tuple[str, str | None], Any]:
        cache = self.cluster.cache
        out = {}
        for key, p in list(cache.parsed.items()):
            rec = cache.records.get(key)
            if p.kind == kind and isinstance(rec, cls):
                out[(p.name, p.parent)] = rec
        return out

    def key_records(self) -> dict[str, NetworkKeys]:
        return {name: rec for (name, _), rec in self._of("key", NetworkKeys).items()}

    def acks(self, network: str) -> dict[str, KeyAck]:
        return {name: rec for (name, parent), rec in self._of("key_ack", KeyAck).items() if parent == network}

    def participants(self, network: str) -> set[str]:
        cache = self.cluster.cache
        return participants(network, cache.endpoints(network), cache.alive())

    # -- the loop ----------------------------------------------------------------------------------------------

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(TICK, max(self.interval / 4, 1.0)))
            tick = not self._wake.is_set()
            self._wake.clear()
            try:
                await self.sync(force=tick)
                self.last_error = ""
            except ClusterUnavailableError as e:
                log.debug("encryption_sync_postponed", error=e.message)
            except NetdError as e:
                self.last_error = e.message
                log.error("encryption_sync_failed", error=e.message)
            except Exception as e:
                self.last_error = str(e)
                log.exception("encryption_sync_failed")

    def close(self) -> None:
        self.marks.close()

    # -- one pass ----------------------------------------------------------------------------------------------

    async def sync(self, force: bool = False) -> None:
        async with self._lock:
            await self._sync(force)

    async def _sync(self, force: bool) -> None:
        mh, cache = self.mh, self.cluster.cache
        me, port = mh.cfg.node_name, mh.cfg.vxlan_port
        assert mh.address is not None
        state = mh.daemon.service.state
        overlay = {n.id for n in state.networks.values() if n.driver == OVERLAY}
        active = {ep.network for ep in state.endpoints.values() if ep.network in overlay}
        nets = {i: r for i, r in cache.networks().items() if r.encrypted and i in active}
        records = self.key_records()
        alive = cache.alive()
        parts: list[DesiredXfrm] = []
        guards: list[EspGuard] = []
        applied: dict[str, int] = {}
        for net_id, net in sorted(nets.items()):
            rec = records.get(net_id)
            if rec is None:
                await self.keys.ensure(net_id, net.vni)  # the watch brings it back and wakes this loop
                guards.append(EspGuard(net.vni, ()))
                continue
            acks = self.acks(net_id)
            peers: dict[Any, int] = {}
            for node in sorted(self.participants(net_id) - {me}):
                ack = acks.get(node)
                if ack is not None:  # its epoch is known: until then nothing goes to it (dropped, never clear)
                    peers[alive[node].advertise_address] = ack.epoch
            parts.append(build_xfrm(ring_of(rec), mh.address, peers, port, self.epoch))
            guards.append(EspGuard(net.vni, tuple(sorted(peers, key=str))))
            applied[net_id] = rec.seq
        desired = merge(*parts) if parts else DesiredXfrm(frozenset(), frozenset())
        kernel = mh.daemon.kernel
        if not guards and not self._held and not force:
            return  # no encrypted network here, before or now: nothing to read or write
        try:
            observed = await kernel.observe_xfrm()
        except NetdError:
            if guards:
                raise
            observed = desired  # nothing wanted and no XFRM to read (no xfrm_user): nothing of netd's to remove
        actions = plan_xfrm(desired, observed)
        try:
            if actions:
                await kernel.apply_xfrm(actions)
                log.info("encryption_applied", actions=len(actions), networks=len(applied))
        except BaseException:  # no policy to send with: send nothing of those networks rather than clear text
            with contextlib.suppress(NetdError):
                await self.marks.apply([EspGuard(g.vni, ()) for g in guards], port)
            raise
        await self.marks.apply(guards, port, force=force)
        self._held = bool(guards)
        lease = self.cluster.membership.lease_id
        for net_id, seq in applied.items():
            mine = self.acks(net_id).get(me)
            if lease and (mine is None or mine.seq != seq or mine.epoch != self.epoch):
                await self.keys.ack(net_id, me, seq, self.epoch, lease)
        for net_id in applied:
            await self._advance(net_id, start=False)

    async def _advance(self, net_id: str, start: bool) -> bool:
        rec = self.key_records().get(net_id)
        if rec is None:
            return False
        timer = not rotating(rec) and due(rec, self.interval)
        if not (start or timer or rotating(rec)):
            return False
        nodes, acks = self.participants(net_id), self.acks(net_id)
        if not acked(rec, acks, nodes):
            return False
        if timer:
            log.info("network_key_rotation_due", network=net_id[:12], generation=rec.tx)
        return await self.keys.advance(net_id, start or timer, nodes, acks)

    # -- rotate-key ----------------------------------------------------------------------------------------

    async def rotate(self, name: str, wait: float = ROTATE_WAIT) -> dict[str, Any]:
        """Start a rotation now and wait (up to ``wait`` seconds) until every participant switched and pruned;
        ``Complete`` False: still under way when the wait ended (it goes on; ``status`` shows its step)."""
        net = self.mh.daemon.service.get_network(name)
        rec_net = self.cluster.cache.networks().get(net.id)
        if net.driver != OVERLAY or rec_net is None or not rec_net.encrypted:
            raise InvalidError(
                f"network {net.name!r} is not an encrypted overlay network: nothing to rotate (create one with "
                "-d overlay --opt encrypted)",
                field="network",
            )
        cache = self.cluster.cache
        if net.id not in self.key_records():
            await self.keys.ensure(net.id, rec_net.vni)
            await cache.wait_for(lambda c: net.id in self.key_records(), self.cluster.cfg.request_timeout)
        rec = self.key_records().get(net.id)
        if rec is None:
            raise ConflictError(f"network {net.name!r}: its keys are not readable yet; try again", field="network")
        if rotating(rec):
            raise ConflictError(
                f"a key rotation of network {net.name!r} is under way (step {rec.stage}); wait for it to finish",
                field="network",
            )
        late = waiting_for(rec, self.acks(net.id), self.participants(net.id))
        if late:
            raise ConflictError(
                f"network {net.name!r}: node(s) {', '.join(late)} have not applied its current keys yet, so a "
                "rotation would wait for them; check their logs (netd status), then try again",
                field="network",
            )
        if not await self._advance(net.id, start=True):
            raise ConflictError(
                f"network {net.name!r}: another node started a rotation at the same moment; see its progress with "
                "network inspect",
                field="network",
            )
        target = rec.seq + 3
        log.info("network_key_rotation_started", network=net.name, generation=rec.tx + 1)

        def done(_c: Any) -> bool:
            now = self.key_records().get(net.id)
            return (
                now is not None
                and now.seq >= target
                and not waiting_for(now, self.acks(net.id), self.participants(net.id))
            )

        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while not done(cache) and loop.time() < end:
            self.poke()
            await cache.wait_for(done, 1.0)
            with contextlib.suppress(ClusterUnavailableError):
                await self._advance(net.id, start=False)
        now = self.key_records().get(net.id)
        complete = done(cache)
        log.info("network_key_rotation_done" if complete else "network_key_rotation_pending", network=net.name)
        return {
            "Network": net.name,
            "Generation": now.tx if now is not None else None,
            "Stage": now.stage if now is not None else "",
            "Complete": complete,
        }

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch, "last_error": self.last_error, "networks": {}}
        for net_id, rec in self.key_records().items():
            out["networks"][net_id[:12]] = {"generation": rec.tx, "stage": rec.stage, "seq": rec.seq}
        return out
