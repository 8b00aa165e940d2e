"""The folders are the architecture: each layer imports only from below it (core <- drivers <- engine <- api and
daemon; kernel and firewall know no HTTP; the CLI imports nothing of the daemon)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

NETD = Path(__file__).resolve().parents[2] / "netd"

# what each package may import of netd (besides itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "drivers": {"core"},
    "kernel": {"core"},
    "firewall": {"core", "drivers"},
    "dns": {"core", "drivers"},
    "cluster": {"core"},
    "engine": {"core", "drivers", "kernel", "firewall"},
    "ops": {"core", "drivers", "kernel", "firewall", "engine", "dns"},
    "multihost": {"core", "drivers", "kernel", "firewall", "engine", "dns", "ops", "cluster"},
    "dockerapi": {"core", "drivers", "engine", "ops", "api", "views"},  # Docker's routes beside netd's API
    "cli": set(),
}
NO_HTTP = ("core", "drivers", "kernel", "firewall", "cluster", "engine")


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
            if node.module == "netd":
                out += [f"netd.{a.name}" for a in node.names if not a.name.startswith("__")]
    return out


def _modules(package: str) -> list[Path]:
    return sorted((NETD / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_layer_imports_only_from_below(package: str) -> None:
    bad = []
    for path in _modules(package):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "netd" and len(parts) > 1 and parts[1] != package and parts[1] not in ALLOWED[package]:
                bad.append(f"{path.relative_to(NETD)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", NO_HTTP)
def test_no_http_below_the_api(package: str) -> None:
    bad = [f"{p.relative_to(NETD)}: {n}" for p in _modules(package) for n in _imports(p) if "aiohttp" in n]
    assert not bad, bad


def test_the_cli_imports_only_the_standard_library() -> None:
    bad = []
    for path in _modules("cli"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "netd" and name.startswith("netd.cli"):
                continue
            if top not in sys.stdlib_module_names and top != "__future__":
                bad.append(f"{path.relative_to(NETD)} imports {name}")
    assert not bad, bad


def test_the_top_level_is_only_the_entry_points() -> None:
    top = sorted(p.name for p in NETD.glob("*.py"))
    assert top == ["__init__.py", "api.py", "daemon.py", "views.py"]
