"""Project layout rules: one-way dependencies and no top-level `nodes` package."""

from __future__ import annotations

import ast
import subprocess
import sys

import tomllib
from conftest import REPO

FORBIDDEN_FROM_CORE = ("nodes", "training", "comfy", "folder_paths")

# uniworld_core's layers, bottom first: a unit may import its own unit and the layers below it. Units that
# share a layer are peers and never import each other (the basics excepted: they are one small toolbox).
CORE_LAYERS = [
    {"errors", "progress", "device", "media"},
    {"quant"},
    {"model"},
    {"parallel"},
    {"sampling", "memory", "weights"},
    {"conditioning"},
    {"presets"},
    {"__init__", "__main__", "cli"},
]
LAYER_OF = {name: rank for rank, names in enumerate(CORE_LAYERS) for name in names}
BASICS = CORE_LAYERS[0]


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


def _core_unit(path) -> str:
    """The layer name of a core file: its subpackage, or its own name at the top."""
    inner = path.relative_to(REPO / "uniworld_core")
    return inner.parts[0] if len(inner.parts) > 1 else inner.stem


def _core_imports(path) -> set[str]:
    """The core units a core file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = path.relative_to(REPO / "uniworld_core")
    package = list(inner.parts[:-1])  # [] at the top, ["model"] inside model/
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            parts = base + (node.module.split(".") if node.module else [])
            if parts:
                found.add(parts[0])
            else:  # `from . import x` at the top: x is a unit, or a name of the package (__init__)
                found.update(alias.name if alias.name in LAYER_OF else "__init__" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uniworld_core."):
            found.add(node.module.split(".")[1])
    return found


def test_every_core_module_belongs_to_a_layer():
    units = {_core_unit(p) for p in (REPO / "uniworld_core").rglob("*.py")}
    assert units <= set(LAYER_OF), f"not in CORE_LAYERS: {sorted(units - set(LAYER_OF))}"


def layering_violations(path) -> list[str]:
    """Imports of a core file that break the layering: unknown units, layers above, peers."""
    unit, found = _core_unit(path), []
    for imported in _core_imports(path):
        if imported not in LAYER_OF:
            found.append(f"imports unknown core unit {imported}")
        elif LAYER_OF[imported] > LAYER_OF[unit]:
            found.append(f"({unit}) imports {imported}, a layer above it")
        elif (LAYER_OF[imported] == LAYER_OF[unit] and imported != unit and not {unit, imported} <= BASICS
              and unit not in ("__init__", "__main__", "cli")):
            found.append(f"({unit}) imports its peer {imported}")
    return found


def test_no_core_layer_imports_one_above_it_or_a_peer():
    for path in (REPO / "uniworld_core").rglob("*.py"):
        assert not layering_violations(path), f"{path.relative_to(REPO)}: {layering_violations(path)}"


def test_the_layering_rule_catches_peer_and_upward_imports():
    """The rule is not vacuous: sampling importing weights (a peer) or conditioning (above) is caught."""
    probe = REPO / "uniworld_core" / "sampling" / "_layering_probe.py"
    for line, problem in (("from ..weights import load", "peer weights"),
                          ("from ..conditioning import Conditioner", "conditioning, a layer above")):
        probe.write_text(line + "\n", encoding="utf-8")
        try:
            assert any(problem in v for v in layering_violations(probe)), line
        finally:
            probe.unlink()


def _deep_core_imports(path) -> list[str]:
    """uniworld_core imports that reach past the façade and the subpackages (uniworld_core.x.y)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    deep = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if "uniworld_core" in parts and len(parts) - parts.index("uniworld_core") > 2:
                deep.append(node.module)
    return deep


def test_nodes_training_and_bench_use_the_facade_and_subpackages():
    """Outside the core, code imports `uniworld_core` or `uniworld_core.<subpackage>`, never a module inside."""
    for folder in ("nodes", "training", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            deep = _deep_core_imports(path)
            assert not deep, f"{path.relative_to(REPO)} reaches into {deep}; import from the façade/subpackage"


def test_subpackages_say_what_lives_there():
    for init in (REPO / "uniworld_core").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and "import" in doc, f"{init.relative_to(REPO)} lacks a docstring saying what it may import"


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
    code = ("import sys, uniworld_core.sampling.pipeline, uniworld_core.__main__; "
            "bad = [m for m in ('comfy', 'folder_paths', 'diffusers', 'transformers', 'av', "
            "'flash_attn', 'torch_npu') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.strip()
    assert out == "[]"


def test_every_name_the_facade_promises_is_there():
    import uniworld_core

    missing = [name for name in uniworld_core.__all__ if not hasattr(uniworld_core, name)]
    assert not missing, f"uniworld_core.__all__ names {missing}, which the façade does not import"
