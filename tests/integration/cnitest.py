"""Run the ``netd`` CNI plugin the way a runtime does: ``CNI_*`` in the environment, the config on stdin."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from netdtest import VENV_BIN, sh

NETD_CNI = str(VENV_BIN / "netd-cni")


@dataclass
class CniAnswer:
    rc: int
    out: Any  # the parsed stdout (a result, an error object) or None when empty
    stderr: str

    @property
    def code(self) -> int | None:
        return self.out.get("code") if isinstance(self.out, dict) else None


def conf(socket: str, network: str = "app", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    """One plugin's configuration as libcni hands it over (name and cniVersion copied from the list)."""
    return {"cniVersion": version, "name": network, "type": "netd", "network": network, "socket": socket, **extra}


def cni(
    command: str,
    config: dict[str, Any] | str | None,
    container: str = "",
    netns: str = "",
    ifname: str = "eth0",
    args: str = "",
    env: dict[str, str] | None = None,
) -> CniAnswer:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CNI_", "NETD_"))}
    environ.update({"CNI_COMMAND": command, "CNI_PATH": str(VENV_BIN)})
    if container:
        environ["CNI_CONTAINERID"] = container
    if netns:
        environ["CNI_NETNS"] = netns
    if ifname and command in ("ADD", "DEL", "CHECK"):
        environ["CNI_IFNAME"] = ifname
    if args:
        environ["CNI_ARGS"] = args
    environ.update(env or {})
    stdin = config if isinstance(config, str) else json.dumps(config) if config is not None else ""
    r = subprocess.run([NETD_CNI], input=stdin, env=environ, capture_output=True, text=True, timeout=120)
    out = json.loads(r.stdout) if r.stdout.strip() else None
    return CniAnswer(r.returncode, out, r.stderr)


class Sandboxes:
    """Container-like namespaces made with ``ip netns add`` (a runtime's ``/run/netns/<id>``), removed at exit."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.names: list[str] = []

    def new(self, name: str) -> str:
        full = f"ndt-c-{self.tag}-{name}"
        sh("ip", "netns", "add", full)
        sh("ip", "-n", full, "link", "set", "lo", "up")
        self.names.append(full)
        return f"/run/netns/{full}"

    def remove(self, path: str) -> None:
        name = path.rsplit("/", 1)[1]
        sh("ip", "netns", "del", name, check=False)
        if name in self.names:
            self.names.remove(name)

    def cleanup(self) -> None:
        for name in self.names:
            sh("ip", "netns", "del", name, check=False)
        self.names.clear()
