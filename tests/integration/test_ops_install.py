"""``make install`` into a staging root (DESTDIR): the layout, relocated scripts, an existing config kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from netdtest import REPO

INSTALL = REPO / "tools" / "install.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(INSTALL), *args], capture_output=True, text=True, timeout=600)


def test_destdir_install_and_uninstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    mine = root / "etc" / "netd" / "netd.toml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# the operator's own config\n")
    r = _run("install", "--destdir", str(root))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kept the existing /etc/netd/netd.toml" in r.stdout

    venv = root / "opt" / "netd"
    for name in ("netd", "netd-ctl"):
        link = root / "usr" / "local" / "bin" / name
        assert os.readlink(link) == f"/opt/netd/bin/{name}"
        assert (venv / "bin" / name).read_text().startswith("#!/opt/netd/bin/python")
    for cni_dir in ("usr/lib/cni", "opt/cni/bin"):  # the CNI plugin, where podman and containerd look for it
        plugin = root / cni_dir / "netd"
        assert os.access(plugin, os.X_OK)
        first, _, body = plugin.read_text().partition("\n")
        assert first == "#!/opt/netd/bin/python -IS"
        site = body.split("sys.path.insert(0, '")[1].split("'")[0]
        assert site.startswith("/opt/netd/lib/python3") and (root / site.lstrip("/") / "netd/cli/cni.py").exists()
    assert (venv / "bin" / "netd-cni").read_text().startswith("#!/opt/netd/bin/python")
    for f in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:  # nothing points into the staging root
        if f.is_file() and not f.is_symlink():
            assert str(root) not in f.read_bytes().decode(errors="replace"), f
    unit = (root / "usr/local/lib/systemd/system/netd.service").read_text()
    assert "\nExecStart=/usr/local/bin/netd --config /etc/netd/netd.toml\n" in unit
    assert mine.read_text() == "# the operator's own config\n"
    assert (root / "usr/local/share/doc/netd/netd.toml").read_text() == (REPO / "etc/netd/netd.toml").read_text()
    assert "g netd -" in (root / "usr/lib/sysusers.d/netd.conf").read_text()
    assert (
        "complete -F _netd_ctl netd-ctl" in (root / "usr/share/bash-completion/completions/netd-ctl").read_text()
    )
    assert (root / "usr/share/zsh/vendor-completions/_netd-ctl").read_text().startswith("#compdef netd-ctl")
    # the installed daemon and CLI run (from the staging root, through the venv's own python)
    py = str(venv / "bin" / "python")
    out = subprocess.run([py, "-m", "netd.daemon", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "netd 0.1.0"
    subprocess.run([py, "-m", "netd.cli.main", "status", "--help"], capture_output=True, check=True)

    r = _run("uninstall", "--destdir", str(root))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not venv.exists() and not (root / "usr/local/bin/netd").is_symlink()
    assert not (root / "usr/lib/cni/netd").exists() and not (root / "opt/cni/bin/netd").exists()
    assert not (root / "usr/local/lib/systemd/system/netd.service").exists()
    assert mine.exists()  # configuration stays unless --purge


def test_fresh_install_writes_the_example_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = _run("install", "--destdir", str(root), "--pip-args=--no-deps")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "etc/netd/netd.toml").read_text() == (REPO / "etc/netd/netd.toml").read_text()
