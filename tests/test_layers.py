"""The layers of docs/design.md hold: import-linter's contracts (pyproject.toml) are kept, and
every top-level module of dispart is named in the layers contract (so none escapes it)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import dispart

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_top_level_module_is_in_the_layers_contract() -> None:
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}
    found = {f"dispart.{m.name}" for m in pkgutil.iter_modules(dispart.__path__)}
    assert found - named == set(), f"add these to [tool.importlinter] layers: {found - named}"
    assert named - found == set(), f"layers name modules that do not exist: {named - found}"


LINT_IMPORTS = ("import sys; from importlinter.cli import lint_imports_command; "
                "sys.argv = ['lint-imports', '--no-cache']; sys.exit(lint_imports_command())")


def test_import_contracts_are_kept() -> None:
    pytest.importorskip("importlinter", reason="`pip install -e .[dev]` installs import-linter")
    done = subprocess.run([sys.executable, "-c", LINT_IMPORTS], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    broken = done.stdout[done.stdout.find("Broken contracts"):] if done.returncode else ""
    assert done.returncode == 0, f"import contracts broken (lint-imports):\n{broken or done.stdout}" \
                                 f"{done.stderr[-2000:]}"
    assert "BROKEN" not in done.stdout and " KEPT" in done.stdout
