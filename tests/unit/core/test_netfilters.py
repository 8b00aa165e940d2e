"""Docker's network filters, one implementation (netd.core.netfilters) behind netd's ``GET /v1/networks`` and the
Docker API's ``GET /networks``: both answer every filter alike (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from netd.core import netfilters, predefined
from netd.core.errors import InvalidError
from netd.core.model import DesiredState, Network
from netd.dockerapi.compat import LIST_FILTERS, network_matches
from netd.views import network_view


def _net(
    name: str, driver: str = "bridge", labels: dict[str, str] | None = None, default: bool = False
) -> Network:
    return Network.model_validate(
        {
            "id": name.encode().hex().ljust(64, "0"),
            "name": name,
            "driver": driver,
            "bridge": f"br-{name}",
            "labels": labels or {},
            "is_default": default,
            "created": "2026-01-01T00:00:00+00:00",
        }
    )


NETS = [
    _net("web-prod", labels={"env": "prod", "team": "a"}),
    _net("web-dev", labels={"env": "dev", "team": "a"}),
    _net("lan", driver="macvlan"),
    _net("bridge", default=True),
]
CASES = [
    {"driver": ["bridge"]},
    {"driver": ["bridge", "macvlan"]},
    {"name": ["web"]},
    {"name": ["web"], "driver": ["macvlan"]},
    {"id": ["776562"]},
    {"label": ["team=a"]},
    {"label": ["team=a", "env=prod"]},  # label values: all must match (Docker's rule)
    {"label": ["env"]},
    {"type": ["builtin"]},
    {"type": ["custom"]},
    {"dangling": ["true"]},
    {"dangling": ["false"]},
    {"scope": ["local"]},
    {"scope": ["swarm"]},
    {"driver": {"bridge": True, "macvlan": False}},
]


@pytest.mark.parametrize("raw", CASES)
def test_v1_and_the_docker_api_answer_alike(raw: dict) -> None:
    st = DesiredState()
    for n in NETS:
        st.networks[n.name] = n
    v1 = predefined.parse_filters(raw)
    docker = netfilters.parse_filters(raw, LIST_FILTERS)
    assert v1 == docker
    by_v1 = sorted(n.name for n in NETS if predefined.matches(network_view(n, st), v1))
    by_docker = sorted(n.name for n in NETS if network_matches(n, 0, docker))
    assert by_v1 == by_docker


def test_label_values_must_all_match_on_both() -> None:
    st = DesiredState()
    web = NETS[0]
    both = {"label": ["team=a", "env=dev"]}
    assert not predefined.matches(network_view(web, st), predefined.parse_filters(both))
    assert not network_matches(web, 0, both)
    assert predefined.matches(network_view(web, st), predefined.parse_filters({"label": ["team=a", "env"]}))


def test_until_and_label_not_for_prune() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    s = netfilters.Subject(
        name="x",
        id="1",
        driver="bridge",
        labels={"keep": "yes"},
        builtin=False,
        created="2026-01-01T00:00:00+00:00",
    )
    assert netfilters.matches(s, {"until": ["1h"]}, now)
    assert not netfilters.matches(s, {"until": ["48h"]}, now)
    assert not netfilters.matches(s, {"label!": ["keep"]}, now)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"colour": ["red"]}, "invalid filter 'colour'"),
        ({"driver": "bridge"}, "expected a list of strings"),
        ({"type": ["other"]}, "use custom or builtin"),
        ({"dangling": ["maybe"]}, "use true or false"),
        (["driver"], "JSON object"),
    ],
)
def test_bad_filters_are_refused_alike(raw: object, says: str) -> None:
    for parse in (lambda r: predefined.parse_filters(r), lambda r: netfilters.parse_filters(r, LIST_FILTERS)):
        with pytest.raises(InvalidError, match=says) as e:
            parse(raw)
        assert e.value.field == "filters"
