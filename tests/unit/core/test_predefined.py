"""Issue 12 item 10: Docker's predefined networks and network filters (pure)."""

import pytest

from netd.core.errors import ConflictError, InvalidError
from netd.core.predefined import matches, parse_filters, predefined_by_ref, predefined_view, refuse_connect


def _view(name: str, driver: str = "bridge", labels: dict[str, str] | None = None, default: bool = False) -> dict:
    return {"Name": name, "Id": "ab12" + name, "Driver": driver, "Labels": labels or {}, "Default": default}


def test_filters_as_docker_combines_them() -> None:
    web = _view("web-prod", labels={"env": "prod", "team": "a"})
    mv = _view("lan", driver="macvlan", labels={"env": "dev"})
    assert matches(web, parse_filters({"driver": ["bridge"]}))
    assert not matches(mv, parse_filters({"driver": ["bridge"]}))
    assert matches(mv, parse_filters({"driver": ["bridge", "macvlan"]}))  # one key: OR
    assert not matches(web, parse_filters({"driver": ["bridge"], "label": ["env=dev"]}))  # keys: AND
    assert matches(web, parse_filters({"name": ["prod"], "label": ["team"]}))
    assert matches(web, parse_filters({"id": ["ab12w"]}))
    assert matches(predefined_view("none"), parse_filters({"driver": ["null"], "type": ["builtin"]}))
    assert matches(_view("bridge", default=True), parse_filters({"type": ["builtin"]}))
    assert not matches(web, parse_filters({"type": ["builtin"]}))
    assert matches(web, parse_filters({"driver": {"bridge": True}}))  # older clients' form


@pytest.mark.parametrize("bad", [{"colour": ["red"]}, {"driver": "bridge"}, {"driver": [1]}])
def test_bad_filters_name_the_field(bad: dict) -> None:
    with pytest.raises(InvalidError) as e:
        parse_filters(bad)
    assert e.value.field == "filters"


def test_host_and_none_as_docker_shows_them() -> None:
    assert (predefined_view("host")["Driver"], predefined_view("none")["Driver"]) == ("host", "null")
    assert predefined_by_ref(predefined_view("host")["Id"]) == "host"
    assert predefined_by_ref("app") is None
    with pytest.raises(ConflictError, match="cannot be disconnected from host network or connected to host"):
        refuse_connect("host")
    with pytest.raises(ConflictError, match=r"private \(none\) mode"):
        refuse_connect("none")
