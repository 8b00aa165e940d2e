"""The state directory on a tiny tmpfs that fills up: a change that cannot be stored answers 507 and changes
nothing; the acknowledged ones survive a restart, including when the snapshot compaction is the write that fails.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netdtest import Host, in_ns, running_host, sh

from netd.engine.state import StateStore

PAGE = 4096


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "netd-test-state", str(where))
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a filler file until the filesystem has no free page left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (64 * 1024, PAGE, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * chunk) < chunk:
                        break
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    st = os.statvfs(directory)
    assert st.f_bavail == 0
    return filler


def big_network() -> dict[str, Any]:
    """A network create whose journal record (~5 KiB) is larger than any page's slack in the journal."""
    aux = {f"reserved-host-{i:03d}": f"10.77.{i // 250}.{i % 250 + 2}" for i in range(200)}
    return {"Name": "big", "IPAM": {"Config": [{"Subnet": "10.77.0.0/16", "AuxiliaryAddresses": aux}]}}


def big_connect() -> dict[str, Any]:
    """A connect whose journal record (~5 KiB) is larger than any page's slack in the journal."""
    aliases = [".".join([f"alias{i:02d}" + "x" * 56, "y" * 63, "z" * 63, "w" * 61]) for i in range(20)]
    return {"Netns": "c1", "EndpointConfig": {"Aliases": aliases}}


def _listing(host: Host) -> dict[str, Any]:
    return {
        "networks": sorted(n["Name"] for n in host.api.ok("GET", "/v1/networks")),
        "netns": sorted(ns["Name"] for ns in host.api.ok("GET", "/v1/netns")),
        "stored": host.stored_state(),
    }


def _temp_files(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.endswith(".tmp")]


def test_full_state_disk_answers_507_and_changes_nothing(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "state") as state_dir, running_host(tmp_path, start=False) as host:
        assert host.state_dir == state_dir
        host.start()
        host.api.ok("POST", "/v1/networks", {"Name": "app", "IPAM": {"Config": [{"Subnet": "172.30.40.0/24"}]}})
        host.api.ok("POST", "/v1/netns", {"Name": "c1"})
        filler = fill(state_dir)
        kernel, stored, before = host.kernel_snapshot(), host.state_bytes(), _listing(host)

        for url, body in (("/v1/networks", big_network()), ("/v1/networks/app/connect", big_connect())):
            status, err = host.api.request("POST", url, body)
            assert status == 507, err
            assert err["error"]["code"] == "storage"
            message = err["error"]["message"]
            assert str(state_dir) in message and "No space left on device" in message
            assert f"Free space on the filesystem of {state_dir}" in message
            assert host.kernel_snapshot() == kernel
            assert host.state_bytes() == stored
            assert _temp_files(state_dir) == []
        assert _listing(host) == before
        assert "eth0" not in in_ns(host.ns("c1"), "ip", "-o", "link").stdout
        assert "state_write_failed" in host.log_text()

        filler.unlink()  # space is back: the same requests succeed
        net = host.api.ok("POST", "/v1/networks", big_network())
        host.api.ok("POST", "/v1/networks/app/connect", big_connect())
        after = _listing(host)
        assert after["networks"] == sorted([*before["networks"], "big"])
        assert len(after["stored"]["endpoints"]) == 1

        host.stop()
        host.start()
        assert _listing(host) == after  # exactly the acknowledged changes
        assert host.api.ok("GET", "/v1/networks/big")["Id"] == net["Id"]
        assert "eth0" in in_ns(host.ns("c1"), "ip", "-o", "link").stdout


def _noop_records(journal: Path, at_least: int) -> None:
    """Pad the journal with ``at_least`` records that change nothing, so that a compaction is due, and leave its
    size just past a page boundary: the next small record fits in its last page, a new file does not."""
    size = journal.stat().st_size if journal.exists() else 0
    records = [b'{"op":"del","map":"netns","key":"none"}\n'] * at_least
    size += sum(map(len, records))
    pad = (PAGE - size % PAGE) % PAGE + 100  # ends 100 bytes into a page
    head, tail = b'{"op":"del","map":"netns","key":"', b'"}\n'
    records.append(head + b"n" * (pad - len(head) - len(tail)) + tail)
    with journal.open("ab") as f:
        f.write(b"".join(records))
    assert journal.stat().st_size % PAGE == 100


def test_failed_compaction_keeps_the_change_in_the_journal(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "state") as state_dir, running_host(tmp_path, start=False) as host:
        host.start()
        host.api.ok("POST", "/v1/netns", {"Name": "c1"})
        host.stop()
        path, journal = state_dir / "state.json", state_dir / "state.json.journal"
        StateStore(path).save(StateStore(path).load())  # a snapshot of it all (a store never loaded writes one)
        assert path.exists() and not journal.exists()
        _noop_records(journal, 300)  # COMPACT_EVERY is 256: the next change compacts
        host.start()
        snapshot = (state_dir / "state.json").read_bytes()
        fill(state_dir)

        host.api.ok("POST", "/v1/netns", {"Name": "c2"})  # its record fits; the snapshot does not
        assert "state_compaction_failed" in host.log_text()
        assert (state_dir / "state.json").read_bytes() == snapshot  # the good snapshot is kept
        assert _temp_files(state_dir) == []
        assert b'"key":"c2"' in journal.read_bytes().splitlines()[-1]

        host.stop()
        host.start()  # the acknowledged change is there after a restart
        assert sorted(ns["Name"] for ns in host.api.ok("GET", "/v1/netns")) == ["c1", "c2"]
        assert Path(host.ns("c2")).exists()

        (state_dir / "filler").unlink()
        host.api.ok("POST", "/v1/netns", {"Name": "c3"})  # compaction is tried again, and now succeeds
        assert not journal.exists()
        assert json.loads((state_dir / "state.json").read_bytes())["netns"].keys() == {"c1", "c2", "c3"}
        assert _temp_files(state_dir) == []


def test_read_only_state_disk_answers_503(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "state") as state_dir, running_host(tmp_path, start=False) as host:
        host.start()
        host.api.ok("POST", "/v1/netns", {"Name": "c1"})
        kernel, stored = host.kernel_snapshot(), host.state_bytes()
        sh("mount", "-o", "remount,ro", str(state_dir))
        try:
            status, err = host.api.request("POST", "/v1/networks/bridge/connect", {"Netns": "c1"})
            assert status == 503, err
            assert err["error"]["code"] == "storage" and "Read-only file system" in err["error"]["message"]
            assert f"Remount the filesystem of {state_dir} read-write" in err["error"]["message"]
            assert host.kernel_snapshot() == kernel
        finally:
            sh("mount", "-o", "remount,rw", str(state_dir))
        assert host.state_bytes() == stored
        host.api.ok("POST", "/v1/networks/bridge/connect", {"Netns": "c1"})
        assert len(host.stored_state()["endpoints"]) == 1
