"""Cluster nodes for the emulated CPU of the VM tier (and bench/ipsec_overlay.py --netd): netd's etcd calls get
15 s instead of 2, netd-ctl 120 s instead of 30 (a connect under TCG on a loaded machine took longer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "overlay"))

from mhtest import Node
from netdtest import NETD_CTL, sh


class SlowNode(Node):
    """A node for the emulated CPU: etcd calls get 15 s (the first gRPC connect alone can take seconds)."""

    def _config(self) -> str:
        return super()._config().replace("request_timeout = 2.0", "request_timeout = 15.0")

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """netd-ctl with 120 s (not 30): a connect under TCG on a loaded machine took longer than 30 s."""
        r = sh(NETD_CTL, "--socket", str(self.run_dir / "netd.sock"), "--timeout", "120", *args, check=False,
               timeout=130)  # fmt: skip
        if check and r.returncode != 0:
            raise AssertionError(f"netd-ctl {' '.join(args)} -> {r.returncode}: {r.stderr}\n{r.stdout}")
        return r
