#!/usr/bin/env python3
"""``make install`` / ``make uninstall``: netd in its own venv, on PATH, as a systemd service.

    install.py install   [--destdir DIR] [--prefix /opt/netd] [--bindir /usr/local/bin] [--pip-args "..."]
    install.py uninstall [--destdir DIR] [--prefix /opt/netd] [--bindir /usr/local/bin] [--purge]

What goes where (under DESTDIR, when given, for packaging; paths inside files never contain DESTDIR):

    PREFIX/                                   a venv with netd and its dependencies
    BINDIR/netd, BINDIR/netd-ctl              symlinks into the venv
    /usr/lib/cni/netd, /opt/cni/bin/netd      the CNI plugin for podman, containerd, kubelet: a launcher that runs
                                              netd.cli.cni with ``python -IS`` (no site: ~50 ms less per call)
    /usr/local/lib/systemd/system/netd.service
    /etc/netd/netd.toml                       the commented example of every key; an existing file is kept
    /usr/lib/sysusers.d/netd.conf             the "netd" group: members may use the API socket (0660 root:netd)
    /usr/share/bash-completion/completions/netd-ctl, /usr/share/zsh/vendor-completions/_netd-ctl
    /usr/local/share/doc/netd/                README.md, grafana-dashboard.json
    PREFIX/install-manifest.txt               what uninstall removes

Without DESTDIR it also creates the group and runs ``systemctl daemon-reload`` when systemd is running.
Stdlib only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import grp
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNIT_DIR = "/usr/local/lib/systemd/system"
CONFIG = "/etc/netd/netd.toml"
SYSUSERS = "/usr/lib/sysusers.d/netd.conf"
BASH_COMPLETION = "/usr/share/bash-completion/completions/netd-ctl"
ZSH_COMPLETION = "/usr/share/zsh/vendor-completions/_netd-ctl"
DOC_DIR = "/usr/local/share/doc/netd"
MANIFEST = "install-manifest.txt"
CNI_DIRS = ("/usr/lib/cni", "/opt/cni/bin")  # where podman (Debian) and containerd/kubelet look for plugins


def under(destdir: str, path: str) -> Path:
    return Path(destdir + path) if destdir else Path(path)


def say(msg: str) -> None:
    print(f"install: {msg}")


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def make_venv(destdir: str, prefix: str, pip_args: list[str]) -> Path:
    venv = under(destdir, prefix)
    run(sys.executable, "-m", "venv", "--clear", str(venv))
    run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pip_args, str(REPO))
    if destdir:  # the venv was built at DESTDIR/PREFIX: make its scripts point at PREFIX
        built = str(venv)
        for f in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
            if f.is_symlink() or not f.is_file():
                continue
            try:
                text = f.read_text()
            except UnicodeDecodeError:
                continue
            if built in text:
                f.write_text(text.replace(built, prefix))
    return venv


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def cni_launcher(python: str, path: str) -> str:
    """The CNI plugin as runtimes exec it: isolated (-I) and without site (-S), so the interpreter starts fast;
    the plugin imports only the standard library and netd.cli."""
    return f"#!{python} -IS\nimport sys\nsys.path.insert(0, {path!r})\nfrom netd.cli.cni import main\nmain()\n"


def install(args: argparse.Namespace) -> int:
    d, prefix, bindir = args.destdir, args.prefix, args.bindir
    files: list[str] = []
    venv = make_venv(d, prefix, shlex.split(args.pip_args))
    say(f"venv {prefix}")
    for name in ("netd", "netd-ctl"):
        link = under(d, f"{bindir}/{name}")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f"{prefix}/bin/{name}")
        files.append(f"{bindir}/{name}")
    site = next((venv / "lib").glob("python3*/site-packages")).relative_to(venv)
    for cni_dir in CNI_DIRS:
        plugin = under(d, f"{cni_dir}/netd")
        if plugin.is_symlink():
            plugin.unlink()
        write(plugin, cni_launcher(f"{prefix}/bin/python", f"{prefix}/{site}"), mode=0o755)
        files.append(f"{cni_dir}/netd")
    unit = (REPO / "systemd" / "netd.service").read_text().replace("/usr/local/bin/netd", f"{bindir}/netd")
    write(under(d, f"{UNIT_DIR}/netd.service"), unit)
    files.append(f"{UNIT_DIR}/netd.service")
    config = under(d, CONFIG)
    if config.exists():
        say(f"kept the existing {CONFIG} (the example of every key: {DOC_DIR}/netd.toml)")
    else:
        write(config, (REPO / "etc" / "netd" / "netd.toml").read_text())
        say(f"wrote {CONFIG}")
    write(under(d, SYSUSERS), "# the group whose members may use netd's API socket (netd-ctl)\ng netd -\n")
    files.append(SYSUSERS)
    python = str(venv / "bin" / "python")
    for shell, path in (("bash", BASH_COMPLETION), ("zsh", ZSH_COMPLETION)):
        text = subprocess.run(
            [python, "-m", "netd.cli.main", "completion", shell], check=True, capture_output=True, text=True
        ).stdout
        write(under(d, path), text)
        files.append(path)
    docs = {"README.md": REPO / "README.md", "netd.toml": REPO / "etc" / "netd" / "netd.toml"}
    docs["grafana-dashboard.json"] = REPO / "etc" / "grafana" / "netd-dashboard.json"
    for name, src in docs.items():
        write(under(d, f"{DOC_DIR}/{name}"), src.read_text())
        files.append(f"{DOC_DIR}/{name}")
    write(venv / MANIFEST, "\n".join(files) + "\n")
    if not d:
        _activate()
    say("done: systemctl enable --now netd; add users to the netd group for netd-ctl")
    return 0


def _activate() -> None:
    try:
        grp.getgrnam("netd")
    except KeyError:
        run("groupadd", "--system", "netd")
        say("created group netd")
    if Path("/run/systemd/system").is_dir():
        run("systemctl", "daemon-reload")
    else:
        say("systemd is not running (PID 1 is something else): the unit is installed but not loaded")


def uninstall(args: argparse.Namespace) -> int:
    d, prefix = args.destdir, args.prefix
    venv = under(d, prefix)
    manifest = venv / MANIFEST
    if not manifest.exists():
        say(f"nothing to uninstall: {manifest} not found")
        return 1
    netd_bin = venv / "bin" / "netd"
    if args.purge and not d and netd_bin.exists():
        # netd's firewall rules and its guarded jumps in other tools' chains go with it (nothing else)
        if Path("/run/systemd/system").is_dir():
            subprocess.run(["systemctl", "stop", "netd"], check=False)
        run(str(netd_bin), "--purge-firewall")
    for line in manifest.read_text().split():
        p = under(d, line)
        if p.is_symlink() or p.exists():
            p.unlink()
    shutil.rmtree(venv)
    if args.purge:
        shutil.rmtree(under(d, "/etc/netd"), ignore_errors=True)
    else:
        say(f"kept {CONFIG}, /var/lib/netd (the desired state) and the netd group; --purge removes the config")
    if not d and Path("/run/systemd/system").is_dir():
        run("systemctl", "daemon-reload")
    say("removed")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description="install or uninstall netd")
    p.add_argument("action", choices=["install", "uninstall"])
    p.add_argument("--destdir", default="", help="staging root for packaging (default: install for real)")
    p.add_argument("--prefix", default="/opt/netd", help="where the venv goes (default %(default)s)")
    p.add_argument("--bindir", default="/usr/local/bin", help="where netd and netd-ctl are linked")
    p.add_argument("--pip-args", default="", help="extra pip arguments, e.g. '--no-index --find-links DIR'")
    p.add_argument(
        "--purge", action="store_true", help="uninstall: also remove netd firewall rules/jumps and /etc/netd"
    )
    args = p.parse_args()
    args.destdir = args.destdir.rstrip("/")
    if os.geteuid() != 0 and not args.destdir:
        print("install: run as root (or give --destdir for a staged install)", file=sys.stderr)
        return 2
    return install(args) if args.action == "install" else uninstall(args)


if __name__ == "__main__":
    sys.exit(main())
