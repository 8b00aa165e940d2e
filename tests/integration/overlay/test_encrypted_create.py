"""``network create -d overlay --opt encrypted`` on this machine's kernel, which has XFRM but no ESP: a clear
error at create and nothing made (no etcd record, no device, no state).  Traffic over encrypted networks is
tested in the VM tier (tests/vm/test_encrypted_overlay.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mhtest import Node, cluster
from netdtest import in_ns

from netd.core.errors import KernelError
from netd.kernel.xfrm import probe_esp


def _has_esp() -> bool:
    try:
        asyncio.run(probe_esp())
    except KernelError:
        return False
    return True


def _etcd_keys(c_seg: str, endpoint: str, prefix: str = "/netd/v1/") -> list[str]:
    out = in_ns(c_seg, "etcdctl", f"--endpoints={endpoint}", "get", "--prefix", "--keys-only", prefix).stdout
    return sorted(k for k in out.split() if k)


def _refused(node: Node, *args: str) -> str:
    r = node.ctl(*args, check=False)
    assert r.returncode != 0, f"{args} was accepted: {r.stdout}"
    return r.stderr


def test_encrypted_create_without_esp_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    if _has_esp():
        pytest.skip("this kernel has ESP: the refusal is for kernels without it (the VM tier covers ESP)")
    with cluster(tmp_path, 1) as c:
        (n1,) = c.nodes
        ep = c.etcd.endpoints[0]
        before = _etcd_keys(c.seg_path, ep)
        state = n1.state_bytes()
        for opt in ("encrypted", "encrypted=true"):
            err = _refused(n1, "network", "create", "-d", "overlay", "--attachable", "--opt", opt, "sec")
            assert "network 'sec' not created" in err and "lacks esp4" in err and "modprobe esp4" in err, err
        assert _etcd_keys(c.seg_path, ep) == before  # no network, name, VNI or subnet reserved, no keys
        assert n1.state_bytes() == state
        assert "sec" not in n1.ctl("network", "ls").stdout
        links = in_ns(n1.path, "ip", "-o", "link").stdout
        assert "vx-" not in links and "ov-" not in links
        # the name, the first automatic VNI and subnet are free: a plain overlay takes them
        n1.ctl("network", "create", "-d", "overlay", "--attachable", "sec")
        got = n1.json("network", "inspect", "sec")[0]
        assert got["VNI"] == 4096 and "encrypted" not in got["Options"]


def test_encrypted_on_a_bridge_network_is_refused(tmp_path: Path) -> None:
    with cluster(tmp_path, 1) as c:
        (n1,) = c.nodes
        for driver in ("bridge", "macvlan"):
            err = _refused(n1, "network", "create", "-d", driver, "-o", "encrypted", "b")
            assert "only overlay networks can be encrypted" in err and "-d overlay" in err, err
        assert " b " not in n1.ctl("network", "ls").stdout
