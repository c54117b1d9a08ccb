"""Project layout rules: one-way dependencies and no top-level `nodes` package."""

from __future__ import annotations

import ast
import subprocess
import sys

import tomllib
from conftest import REPO

FORBIDDEN_FROM_CORE = ("nodes", "training", "comfy", "folder_paths")


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_the_layers_above_it():
    for path in (REPO / "uniworld_core").rglob("*.py"):
        bad = _imports(path) & set(FORBIDDEN_FROM_CORE)
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_nobody_imports_nodes_absolutely():
    for path in REPO.rglob("*.py"):
        if ".git" in path.parts:
            continue
        assert "nodes" not in _imports(path), f"{path.relative_to(REPO)} imports `nodes` absolutely"


def test_distribution_installs_only_the_library():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["uniworld_core*"]
    assert "tool" in project and "comfy" in project["tool"]


def test_core_imports_without_comfyui_or_optional_packages():
    code = ("import sys, uniworld_core.pipeline, uniworld_core.__main__; "
            "bad = [m for m in ('comfy', 'folder_paths', 'diffusers', 'transformers', 'av', "
            "'flash_attn', 'torch_npu') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.strip()
    assert out == "[]"
