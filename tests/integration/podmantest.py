"""podman 4.3 (Debian) with its CNI backend pointed at the netd plugin, everything in the test's directories.

podman itself runs inside the test's host namespace (``nsenter --net=``), so whatever it binds stays there; its
storage (vfs), run root, tmp dir, CNI plugin and config directories are all under the test's temp directory.
The image is a busybox-static rootfs made here and ``podman import``ed: nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from cnitest import NETD_CNI

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ping", "httpd", "nslookup", "cat", "ip", "sleep", "wget", "hostname", "ls")
IMAGE = "localhost/netd-test-busybox:latest"
PODMAN_FLAGS = (
    "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--storage-driver", "vfs", "--events-backend", "file",
)  # fmt: skip
RUN_FLAGS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096", "--cap-add", "NET_RAW")


def available() -> str | None:
    """Why podman cannot run these tests here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman)"
    if not Path(BUSYBOX).exists():
        return "busybox-static is not installed (apt-get install busybox-static)"
    if shutil.which("runc") is None:
        return "runc is not installed"
    return None


class Podman:
    def __init__(self, tmp: Path, host_path: str, socket: str, network: str, runroot: Path) -> None:
        self.dir = tmp / "podman"
        self.host_path = host_path
        self.runroot = runroot  # podman wants it under 50 characters
        runroot.mkdir(parents=True, exist_ok=True)
        for sub in ("root", "tmp", "cni-bin", "cni-conf"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(NETD_CNI, self.dir / "cni-bin" / "netd")  # a runtime finds plugins by type in its dirs
        for helper in ("loopback",):
            if Path(f"/usr/lib/cni/{helper}").exists():
                shutil.copy(f"/usr/lib/cni/{helper}", self.dir / "cni-bin" / helper)
        conflist = {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                {
                    "type": "netd",
                    "network": network,
                    "socket": socket,
                    "capabilities": {"portMappings": True, "ips": True, "mac": True, "aliases": True},
                }
            ],
        }
        (self.dir / "cni-conf" / f"{network}.conflist").write_text(json.dumps(conflist, indent=1))
        (self.dir / "containers.conf").write_text(
            "[network]\n"
            'network_backend = "cni"\n'
            f'cni_plugin_dirs = ["{self.dir / "cni-bin"}"]\n'
            f'network_config_dir = "{self.dir / "cni-conf"}"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'tmp_dir = "{self.dir / "tmp"}"\n'
        )

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [
            "nsenter", f"--net={self.host_path}", "podman",
            "--root", str(self.dir / "root"), "--runroot", str(self.runroot),
            "--tmpdir", str(self.dir / "tmp"), *PODMAN_FLAGS, *args,
        ]  # fmt: skip
        env = {**os.environ, "CONTAINERS_CONF": str(self.dir / "containers.conf")}
        env.pop("NETD_SOCKET", None)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} -> {r.returncode}:\n{r.stderr}\n{r.stdout}")
        return r

    def import_busybox(self) -> None:
        rootfs = self.dir / "rootfs.tar"
        with tarfile.open(rootfs, "w") as tar:
            for d in ("bin", "etc", "www", "tmp", "proc", "sys", "dev"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, "bin/busybox")
            for applet in APPLETS:
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
            page = b"hello from podman\n"
            info = tarfile.TarInfo("www/index.html")
            info.size = len(page)
            tar.addfile(info, io.BytesIO(page))
        self("import", "--change", "CMD=/bin/sh", str(rootfs), IMAGE)

    def run(self, name: str, *args: str, cmd: tuple[str, ...] = ("sleep", "3600")) -> str:
        out = self("run", "-d", "--name", name, *RUN_FLAGS, *args, IMAGE, *cmd).stdout.strip()
        return out.splitlines()[-1]

    def cleanup(self) -> None:
        self("rm", "-a", "-f", "-t", "0", check=False)
        self("system", "reset", "-f", check=False, timeout=120)
        for d in (self.dir, self.runroot):
            subprocess.run(["umount", "-R", str(d)], capture_output=True, check=False)
        shutil.rmtree(self.runroot, ignore_errors=True)
