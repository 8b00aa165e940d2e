"""The announcement packets' layout (the integration test proves the kernel takes them)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from netd.kernel.announce import garp, unsolicited_na

MAC = bytes.fromhex("0242ac1e5a05")


def test_gratuitous_arp_names_the_address_as_sender_and_target() -> None:
    ip = IPv4Address("172.30.90.5").packed
    pkt = garp(MAC, ip)
    assert len(pkt) == 28
    assert pkt[:8] == bytes.fromhex("0001080006040001")  # Ethernet, IPv4, request
    assert pkt[8:14] == MAC and pkt[14:18] == ip and pkt[18:24] == b"\0" * 6 and pkt[24:28] == ip


def test_unsolicited_na_overrides_and_carries_the_mac() -> None:
    ip = IPv6Address("fd00:5a::5").packed
    pkt = unsolicited_na(MAC, ip)
    assert len(pkt) == 32
    assert pkt[0] == 136 and pkt[4] & 0x20 and not pkt[4] & 0x40  # override, not solicited
    assert pkt[8:24] == ip and pkt[24:26] == b"\x02\x01" and pkt[26:32] == MAC
