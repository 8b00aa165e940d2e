"""The rotation protocol's pure parts over etcd records (issue 17) and the nft guard table's text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

import pytest

from netd.cluster.enckeys import acked, due, first_keys, next_record, participants, ring_of, rotating, waiting_for
from netd.cluster.keys import KeyLayout, ParsedKey
from netd.cluster.records import EndpointRecord, KeyAck, NetworkKeys, NodeAlive, decode, encode
from netd.firewall.esp_marks import EspGuard, render


def _ack(node: str, seq: int) -> KeyAck:
    return KeyAck(network="n", node=node, seq=seq, epoch=7)


def test_a_rotation_passes_accept_switch_prune_and_keeps_the_new_key() -> None:
    rec = first_keys("n", 4097)
    assert rec.seq == 1 and rec.tx == 1 and not rotating(rec) and len(ring_of(rec).key(1)) == 32
    assert next_record(rec, start=False) is None  # idle: only a start (timer / rotate-key) moves it
    accept = next_record(rec, start=True)
    assert accept is not None and accept.stage == "accept" and rotating(accept)
    assert ring_of(accept).generations == (1, 2) and accept.tx == 1 and accept.seq == 2  # accept 2, send 1
    assert ring_of(accept).key(1) == ring_of(rec).key(1) and ring_of(accept).key(2) != ring_of(rec).key(1)
    switch = next_record(accept, start=False)
    assert (
        switch is not None
        and switch.stage == "switch"
        and switch.tx == 2
        and ring_of(switch).generations == (1, 2)
    )
    prune = next_record(switch, start=False)
    assert prune is not None and prune.stage == "prune" and not rotating(prune)
    assert ring_of(prune).generations == (2,) and prune.tx == 2 and prune.seq == 4
    assert ring_of(prune).key(2) == ring_of(accept).key(2)
    again = next_record(prune, start=True)
    assert again is not None and ring_of(again).generations == (2, 3)


def test_the_record_round_trips_through_etcd_json_and_its_keys_parse() -> None:
    rec = first_keys("n", 4097)
    assert decode(NetworkKeys, encode(rec)) == rec
    k = KeyLayout()
    assert k.parse(k.network_key("n")) == ParsedKey("key", "n")
    assert k.parse(k.key_ack("n", "node1")) == ParsedKey("key_ack", "node1", parent="n")
    assert "KeyRing(" in repr(ring_of(rec)) and "key=" not in repr(ring_of(rec))  # keys never printed


def test_the_barrier_waits_for_every_alive_node_with_endpoints() -> None:
    alive = {n: NodeAlive(name=n, lease=1, advertise_address=IPv4Address("10.0.0.1")) for n in ("a", "b")}
    eps = [
        EndpointRecord(id=f"e{n}", network="n", node=n, mac="02:42:00:00:00:01") for n in ("a", "b", "dead")
    ] + [EndpointRecord(id="x", network="other", node="c", mac="02:42:00:00:00:02")]
    nodes = participants("n", eps, alive)
    assert nodes == {"a", "b"}  # "dead" holds nothing up, "c" is on another network
    rec = next_record(first_keys("n", 1), start=True)
    assert rec is not None
    assert not acked(rec, {"a": _ack("a", rec.seq)}, nodes)
    assert waiting_for(rec, {"a": _ack("a", rec.seq), "b": _ack("b", rec.seq - 1)}, nodes) == ["b"]
    assert acked(rec, {"a": _ack("a", rec.seq), "b": _ack("b", rec.seq + 1)}, nodes)


def test_the_timer() -> None:
    rec = first_keys("n", 1)
    born = datetime.fromisoformat(rec.rotated)
    assert not due(rec, 12 * 3600, born + timedelta(hours=11))
    assert due(rec, 12 * 3600, born + timedelta(hours=12, seconds=1))
    assert not due(rec, 0, born + timedelta(days=9))
    assert born.tzinfo == UTC


def test_guard_table_text() -> None:
    text = render([EspGuard(4097, (IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3"))), EspGuard(9, ())], 4789)
    assert text.startswith("table inet netd_esp {}\ndelete table inet netd_esp\n")
    assert "set peers_4097 { type ipv4_addr; elements = { 10.0.0.2, 10.0.0.3 }; }" in text
    assert "set peers_9 { type ipv4_addr; }" in text
    assert "udp dport 4789 @th,96,24 4097 ip daddr != @peers_4097 drop" in text
    assert "udp dport 4789 @th,96,24 4097 meta mark set 0x6e001001" in text
    assert "udp dport 4789 @th,96,24 9 meta ipsec missing drop" in text
    assert render([], 4789) == "table inet netd_esp {}\ndelete table inet netd_esp\n"


@pytest.mark.parametrize("stage", ["bogus"])
def test_an_unknown_stage_is_an_error(stage: str) -> None:
    rec = first_keys("n", 1).model_copy(update={"stage": stage})
    with pytest.raises(ValueError, match="unknown stage"):
        next_record(rec, start=False)
