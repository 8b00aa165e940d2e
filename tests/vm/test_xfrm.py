"""Encrypted overlays in the VM (this machine's kernel has no ESP): two nodes, an encrypted and a plain VXLAN.

ESP state is programmed only through netd.kernel.xfrm (plan_xfrm over what is observed, as the reconciler
does); the underlay is watched by an AF_PACKET capture on node 1's underlay port."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from ipaddress import ip_address as _ip

import pytest
from esplab import ENC_VNI, PLAIN_VNI, Capture, Lab, summarize, tcp_send
from netdtest import in_ns, reach

from netd.core.ipsecspec import DesiredXfrm, KeyRing, derive_spi, new_ring
from netd.drivers.overlay_crypto import plan_rotation
from netd.kernel.xfrm import probe_esp

MARKER = b"netd-secret-marker-7f3a9c"


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Lab, list[KeyRing]]]:
    asyncio.run(probe_esp())  # a kernel without ESP fails here with the clear message
    lab = Lab()
    try:
        lab.build()
        ring = new_ring(ENC_VNI)
        for i in lab.nodes:
            lab.mark_vni(i, ENC_VNI)
            lab.converge(i, lab.desired(ring, i))
        yield lab, [ring]
    finally:
        lab.cleanup()


def test_encrypted_traffic_is_esp_and_plain_traffic_is_vxlan(lab: tuple[Lab, list[KeyRing]]) -> None:
    lb, rings = lab
    for i in lb.nodes:
        assert lb.observe(i) == lb.desired(rings[0], i)  # read back: exactly what was asked, nothing else
    cap = Capture(lb)
    try:
        assert reach(lb.path("e", 1), "10.91.0.2", deadline=20)
        assert reach(lb.path("p", 1), "10.92.0.2", deadline=20)
        assert tcp_send(lb, "e1", "e2", "10.91.0.2", MARKER * 200) == MARKER * 200
        assert tcp_send(lb, "p1", "p2", "10.92.0.2", MARKER * 200, port=7101) == MARKER * 200
    finally:
        frames = cap.stop()
    seen = summarize(frames)
    a, b = _ip(lb.node_ip(1)), _ip(lb.node_ip(2))
    tx = {derive_spi(ENC_VNI, 1, a, b), derive_spi(ENC_VNI, 1, b, a)}
    assert set(seen.esp_spis) == tx and min(seen.esp_spis.values()) >= 3, seen  # ESP both ways, our SPIs only
    assert ENC_VNI not in seen.vxlan_vnis, seen  # no cleartext VXLAN of the encrypted network
    assert seen.vxlan_vnis.get(PLAIN_VNI, 0) >= 6, seen  # the plain network on the same nodes stays VXLAN
    encrypted_marker = [f for f in frames if MARKER in f]
    # the control: the plain network's copy of the marker is on the wire, so the capture would have seen it
    assert encrypted_marker and all(_vni_of(f) == PLAIN_VNI for f in encrypted_marker)


def test_cleartext_vxlan_for_an_encrypted_vni_is_dropped(lab: tuple[Lab, list[KeyRing]]) -> None:
    lb, rings = lab
    assert reach(lb.path("e", 1), "10.91.0.2", deadline=20)
    # node 2 stops sending ESP (its policy gone, its nft mark rule stays): node 1 drops the cleartext VXLAN
    d2 = lb.desired(rings[0], 2)
    lb.converge(2, DesiredXfrm(d2.sas, frozenset()))
    in_ns(lb.path("n", 2), "nft", "flush", "chain", "inet", "netd_esp_test", "out")
    try:
        r = in_ns(lb.path("e", 1), "ping", "-n", "-q", "-c", "3", "-W", "2", "10.91.0.2", check=False)
        assert r.returncode != 0 and " 0 received" in r.stdout, r.stdout
    finally:
        in_ns(lb.path("n", 2), "nft", "delete", "table", "inet", "netd_esp_test")
        lb.mark_vni(2, ENC_VNI)
        lb.converge(2, d2)
    assert reach(lb.path("e", 1), "10.91.0.2", deadline=20)


def test_key_rotation_under_a_10ms_ping_loses_nothing(lab: tuple[Lab, list[KeyRing]]) -> None:
    lb, rings = lab
    assert reach(lb.path("e", 1), "10.91.0.2", deadline=20)
    steps = plan_rotation(rings[-1])
    cap = Capture(lb)
    cmd = ["ping", "-n", "-q", "-i", "0.01", "-c", "800", "-W", "5", "10.91.0.2"]
    pinger = subprocess.Popen(
        ["nsenter", f"--net={lb.path('e', 1)}", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(1.5)
        for step in steps:  # each stage on every node before the next (the barrier of the etcd protocol)
            for i in lb.nodes:
                lb.converge(i, lb.desired(step.ring, i))
            time.sleep(0.3)
        out, _ = pinger.communicate(timeout=120)
    finally:
        pinger.kill()
        frames = cap.stop()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m and m.group(1) == m.group(2) == "800", out
    rings.append(steps[-1].ring)
    for i in lb.nodes:
        assert lb.observe(i) == lb.desired(steps[-1].ring, i)  # old generation's SAs gone
    seen = summarize(frames).esp_spis
    a, b = _ip(lb.node_ip(1)), _ip(lb.node_ip(2))
    old, new = steps[0].ring.tx, steps[-1].ring.tx
    for gen in (old, new):  # the ping really crossed the switch: both generations carried it, both ways
        assert seen.get(derive_spi(ENC_VNI, gen, a, b), 0) > 0 and seen.get(derive_spi(ENC_VNI, gen, b, a), 0) > 0
    assert len(seen) == 4, seen


def test_a_node_that_leaves_and_reboots(lab: tuple[Lab, list[KeyRing]]) -> None:
    """Node 1 leaves: node 2 drops everything for it.  Node 1 comes back with an empty kernel and a new epoch
    (its sequence numbers restart at 1, so it must not reuse its old outbound SAs): encryption resumes."""
    lb, rings = lab
    ring = rings[-1]
    lb.converge(2, lb.desired(ring, 2, peers=()))  # node 1 left the cluster
    assert lb.observe(2) == DesiredXfrm(frozenset(), frozenset())
    lb.converge(1, lb.desired(ring, 1, peers=()))  # ... and its kernel state is gone (reboot)
    assert lb.observe(1) == DesiredXfrm(frozenset(), frozenset())
    assert not reach(lb.path("e", 1), "10.91.0.2", deadline=3)  # sent in clear now: node 2 drops it
    epochs = {1: 1}
    for i in lb.nodes:
        lb.converge(i, lb.desired(ring, i, epochs=epochs))
    assert lb.observe(2) == lb.desired(ring, 2, epochs=epochs)
    cap = Capture(lb)
    try:
        assert reach(lb.path("e", 1), "10.91.0.2", deadline=20)
        assert tcp_send(lb, "e1", "e2", "10.91.0.2", MARKER * 50) == MARKER * 50
    finally:
        frames = cap.stop()
    a, b = _ip(lb.node_ip(1)), _ip(lb.node_ip(2))
    assert set(summarize(frames).esp_spis) == {
        derive_spi(ENC_VNI, ring.tx, a, b, epoch=1),
        derive_spi(ENC_VNI, ring.tx, b, a, epoch=0),
    }
    assert not any(MARKER in f for f in frames)


def _vni_of(frame: bytes) -> int | None:
    if frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    l4 = 14 + (frame[14] & 0xF) * 4
    return int.from_bytes(frame[l4 + 12 : l4 + 15], "big")
