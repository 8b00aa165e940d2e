"""The API socket is never open to other users, not even for a moment between bind and chmod (issue 11.7).

netd is started under umask 000 (a careless unit or shell), with strace holding every chmod for 0.3 s so that
the moment between bind and chmod is long enough to see; the socket file is watched from the moment it appears
until netd is ready: it must never have the other-bits set."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from pathlib import Path

from netdtest import NETD, Host, running_host

DELAY_CHMOD = "inject=chmod,fchmodat:delay_enter=300000"  # microseconds


def _modes_until_ready(host: Host, sock: Path) -> list[int]:
    host.write_config()
    netd = f'nsenter --net={host.path} {NETD} --config "{host.config_path}"'
    host.spawn(
        ["sh", "-c", f"umask 000; exec strace -f -qq -o /dev/null -e trace=chmod,fchmodat -e {DELAY_CHMOD} {netd}"]
    )
    modes: list[int] = []
    while host.proc is not None and host.proc.poll() is None:
        try:
            modes.append(stat.S_IMODE(os.lstat(sock).st_mode))
        except FileNotFoundError:
            time.sleep(0.001)
            continue
        if modes[-1] == 0o660 and host.api.request("GET", "/v1/status")[0] == 200:
            return modes
        time.sleep(0.001)
    raise AssertionError(f"netd exited: {host.log_text()[-2000:]}")


def _stop_traced(host: Host) -> None:
    """Stop netd itself: killing strace (as the harness's cleanup does) would leave it running, detached."""
    with contextlib.suppress(OSError, ValueError, KeyError, AssertionError):
        pid = int(host.api.ok("GET", "/v1/status")["pid"])
        os.kill(pid, signal.SIGTERM)
        for _ in range(1500):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.01)
    host.stop()


def test_api_socket_is_never_world_accessible(tmp_path: Path) -> None:
    with running_host(tmp_path, start=False) as host:
        sock = host.run_dir / "netd.sock"
        try:
            modes = _modes_until_ready(host, sock)
        finally:
            _stop_traced(host)
        assert not [oct(m) for m in modes if m & 0o007], f"modes seen: {sorted({oct(m) for m in modes})}"
        assert 0o700 in modes  # seen while the chmod was held: the window was watched, and it was closed
        assert modes[-1] == 0o660  # socket_mode applied in the end
