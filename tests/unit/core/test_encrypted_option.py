"""``-o encrypted`` on network create (issue 17): parsed, normalised by the overlay driver, else refused."""

from __future__ import annotations

import pytest

from netd.cli.main import build_request
from netd.core.errors import InvalidError
from netd.drivers import parse_network_create
from netd.drivers.overlay import OverlayOptions
from netd.drivers.overlay_crypto import normalized_options, parse_encrypted


@pytest.mark.parametrize("value", ["", "true", "TRUE", "1", "yes", "on"])
def test_encrypted_values_that_mean_yes(value: str) -> None:
    assert parse_encrypted({"encrypted": value})
    assert normalized_options({"encrypted": value, "x": "y"}) == {"x": "y", "encrypted": "true"}


@pytest.mark.parametrize("value", ["false", "0", "no", "off"])
def test_encrypted_values_that_mean_no(value: str) -> None:
    assert not parse_encrypted({"encrypted": value})
    assert normalized_options({"encrypted": value}) == {}  # not shown at all, as a plain overlay


def test_no_option_is_not_encrypted() -> None:
    assert not parse_encrypted({})


def test_a_bad_value_names_the_option_and_what_to_do() -> None:
    with pytest.raises(InvalidError) as e:
        parse_encrypted({"encrypted": "maybe"})
    assert e.value.field == "encrypted" and "encrypted='maybe'" in e.value.message
    assert "-o encrypted" in e.value.message


def test_overlay_create_body_parses_encrypted() -> None:
    _req, opts = parse_network_create({"Name": "n", "Driver": "overlay", "Options": {"encrypted": ""}})
    assert isinstance(opts, OverlayOptions) and opts.encrypted
    _req, opts = parse_network_create({"Name": "n", "Driver": "overlay", "Options": {}})
    assert isinstance(opts, OverlayOptions) and not opts.encrypted


@pytest.mark.parametrize("driver", ["bridge", "macvlan", "ipvlan"])
def test_encrypted_on_a_non_overlay_network_is_refused(driver: str) -> None:
    body = {"Name": "n", "Driver": driver, "Options": {"encrypted": "true", "parent": "eth0"}}
    with pytest.raises(InvalidError) as e:
        parse_network_create(body)
    assert e.value.field == "encrypted"
    assert "only overlay networks can be encrypted" in e.value.message and "-d overlay" in e.value.message


def test_cli_sends_a_bare_encrypted_option_as_docker_does() -> None:
    _m, _p, body = build_request(["network", "create", "-d", "overlay", "--opt", "encrypted", "--attachable", "s"])
    assert body["Options"] == {"encrypted": ""} and body["Attachable"] is True and body["Driver"] == "overlay"
    _m, _p, body = build_request(["network", "create", "-d", "overlay", "-o", "encrypted=true", "s"])
    assert body["Options"] == {"encrypted": "true"}


def test_cli_still_wants_key_value_for_other_options() -> None:
    with pytest.raises(SystemExit):
        build_request(["network", "create", "-o", "parent", "n"])


def test_cli_rotate_key() -> None:
    assert build_request(["network", "rotate-key", "sec net"]) == (
        "POST",
        "/v1/networks/sec%20net/rotate-key?wait=50",
        None,
    )
    _m, path, _b = build_request(["network", "rotate-key", "--wait", "300", "s"])
    assert path == "/v1/networks/s/rotate-key?wait=300"
