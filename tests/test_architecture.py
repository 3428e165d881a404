"""The layer plan in pyproject.toml's import-linter contracts holds for the code as it is, and a planted import against
it is caught.

The packages install under one import root from several top-level folders (`mmx` is `mmx_cli/`, `mmx.model` is
`model/`, …), which import-linter cannot follow through an editable install, so the check runs on a copy of the
sources laid out as the installed wheel has them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"model": "model", "kernels": "kernels", "tasks": "tasks", "results": "results"}

pytest.importorskip("importlinter")


def _installed_layout(target: Path) -> Path:
    """Copy the Python sources into `target/mmx/...` as a wheel lays them out; return `target`."""
    ignore = shutil.ignore_patterns("__pycache__", "weights", "data", "templates", "*.md")
    shutil.copytree(ROOT / "mmx_cli", target / "mmx", ignore=ignore)
    for name, folder in PARTS.items():
        shutil.copytree(ROOT / folder, target / "mmx" / name, ignore=ignore)
    return target


def _lint(layout: Path) -> subprocess.CompletedProcess[str]:
    linter = Path(sys.executable).with_name("lint-imports")
    env = {"PYTHONPATH": str(layout), "PATH": str(Path(sys.executable).parent), "NO_COLOR": "1"}
    return subprocess.run(
        [str(linter), str(ROOT / "pyproject.toml")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_every_import_follows_the_layers(tmp_path: Path) -> None:
    result = _lint(_installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted"),
    [
        ("tasks/base.py", "import mmx.model.backends.base"),  # a part reaching sideways into another part
        ("kernels/naive.py", "import mmx.workflows.evaluate.sweep"),  # a lower layer importing upwards
        ("mmx/workflows/provenance.py", "import mmx.commands.info"),  # anything importing a command module
    ],
)
def test_an_import_against_the_plan_fails_the_check(tmp_path: Path, module: str, planted: str) -> None:
    layout = _installed_layout(tmp_path)
    path = layout / "mmx" / module if not module.startswith("mmx/") else layout / module
    path.write_text(path.read_text() + f"\n{planted}  # planted\n")
    result = _lint(layout)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


def test_every_package_is_listed_for_the_wheel() -> None:
    """A package missing from `[tool.setuptools] packages` works in an editable install but is absent from a wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {"mmx": "mmx_cli", **{f"mmx.{name}": folder for name, folder in PARTS.items()}}
    assert {name: path for name, path in config["package-dir"].items()} == folders
    found = set()
    for root_name, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            if root_name == "mmx" and relative and relative[0] in PARTS:
                continue
            found.add(".".join((root_name, *relative)))
    assert found == listed
