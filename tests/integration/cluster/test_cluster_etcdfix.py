"""The etcd fixture itself: inside a test namespace (as the multi-host tests will run it, on the underlay) and
always stopped."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import urllib.request
from pathlib import Path

import pytest
from etcdfix import etcd_cluster, in_netns


def _gateway_put_get(url: str) -> bytes:
    """A put and a get through etcd's JSON gateway (/v3/kv/...), from inside the namespace."""

    def call(path: str, body: dict[str, str]) -> dict[str, object]:
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            out: dict[str, object] = json.loads(r.read())
            return out

    key = base64.b64encode(b"/probe").decode()
    call("/v3/kv/put", {"key": key, "value": base64.b64encode(b"inside").decode()})
    kvs = call("/v3/kv/range", {"key": key})["kvs"]
    return base64.b64decode(kvs[0]["value"])  # type: ignore[index]


def test_etcd_inside_a_test_namespace_on_its_address(tmp_path: Path) -> None:
    ns = f"ndt-etcd-{secrets.token_hex(3)}"
    path = f"/run/netns/{ns}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "10.254.0.10/32", "dev", "lo"], check=True)
        with etcd_cluster(tmp_path, 1, netns=path, address="10.254.0.10") as etcd:
            url = etcd.endpoints[0]
            assert url.startswith("http://10.254.0.10:")
            assert in_netns(path, lambda: _gateway_put_get(url)) == b"inside"
            # not reachable from the machine's own namespace: nothing leaks out of the test namespace
            with pytest.raises(OSError):
                urllib.request.urlopen(url + "/health", timeout=1)
        assert not etcd.leftover()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
