"""The service's endpoint index follows every change of the desired state (connects, disconnects, removals,
rollbacks), as an index built from the state would, over a random walk of API operations; and the journal
written from the changes it names replays to the same state."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from test_epindex import _tables
from test_service_rollback import FakeApplier, _service

from netd.core.actions import Scope
from netd.core.epindex import EndpointIndex
from netd.core.errors import NetdError
from netd.core.model import DesiredState
from netd.engine.state import StateStore


class RandomFail(FakeApplier):
    """Fails one apply of an endpoint or netns change in five: the change is rolled back."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(fail_first=False)
        self.rng = rng

    async def apply(self, scope: Scope, reason: str) -> dict[str, str]:
        if not reason.startswith(("rollback", "network")) and self.rng.random() < 0.2:
            touched = [*(scope.endpoints or ()), *(scope.networks or ()), *(scope.netns or ())]
            return {touched[0]: "failed"} if touched else {}
        return {}


def _check(state: DesiredState, index: EndpointIndex, step: int) -> None:
    assert index.state is state, step
    assert _tables(index) == _tables(EndpointIndex.build(state)), step


def test_the_index_follows_a_random_walk_of_operations(tmp_path: Path) -> None:
    rng = random.Random(1414)
    svc = _service(tmp_path, RandomFail(rng))
    names = [f"n{i}" for i in range(8)]

    async def walk() -> None:
        for net in ("a", "b"):
            await svc.create_network({"Name": net})
        most = 0
        for step in range(300):
            r = rng.random()
            ns, net = rng.choice(names), rng.choice(["a", "b"])
            try:
                if r < 0.2:
                    await svc.create_netns({"Name": ns})
                elif r < 0.65:
                    body: dict[str, object] = {"Netns": ns}
                    if rng.random() < 0.3:
                        body["Ports"] = [{"HostPort": rng.choice([80, 81, 0]), "ContainerPort": 80}]
                    if rng.random() < 0.2:
                        body["EndpointConfig"] = {"GwPriority": rng.choice([1, 5])}
                    await svc.connect(net, body)
                elif r < 0.82:
                    await svc.disconnect(net, {"Netns": ns})
                elif r < 0.9:
                    await svc.remove_netns_many(rng.sample(names, rng.choice([1, 2])))
                elif r < 0.96:
                    await svc.prune_endpoints({rng.choice(sorted(svc.state.endpoints or {"x": None}))}, "test")
                else:
                    await svc.remove_network(net, force=True)
                    await svc.create_network({"Name": net})
            except NetdError:
                pass
            _check(svc.state, svc._index, step)
            # the journal, which records only the endpoints the index names as changed, replays to the state
            stored = StateStore(tmp_path / "state.json").load()
            assert stored == svc.state, step
            # the order too (first connected wins default-route and resolver ties): a rollback is snapshotted
            assert list(stored.endpoints) == list(svc.state.endpoints), step
            most = max(most, len(svc.state.endpoints))
        assert most > 5

    asyncio.run(walk())
