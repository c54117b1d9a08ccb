"""Shared test helpers: reference-file discovery and error measures."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
SHIPPED_REFERENCE = REPO / "tests" / "reference"  # a copy of ../shared/reference, so any clone can test
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


def reference_dirs() -> list[Path]:
    """The shipped vectors, ../shared/reference beside the checkout, and $UNIWORLD_REFERENCE_DIR when set."""
    dirs = [SHIPPED_REFERENCE, SHARED_REFERENCE]
    extra = os.environ.get("UNIWORLD_REFERENCE_DIR")
    if extra:
        dirs.append(Path(extra))
    return [d for d in dirs if d.is_dir()]


def reference_files(pattern: str) -> list[Path]:
    """Every reference file matching `pattern`, each content once (the shipped copy and ../shared agree)."""
    found: dict[str, Path] = {}
    for folder in reference_dirs():
        for path in sorted(folder.glob(pattern)):
            found.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path.resolve())
    return sorted(found.values())


class Reference:
    """One reference file: its tensors and its JSON metadata."""

    def __init__(self, path: Path):
        self.path = path
        with safe_open(str(path), "pt") as f:
            self.meta = {k: _maybe_json(v) for k, v in (f.metadata() or {}).items()}
            self.tensors = {k: f.get_tensor(k) for k in f.keys()}

    def with_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def has(self, *keys: str) -> bool:
        return all(k in self.tensors for k in keys)


def _maybe_json(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (the reference README's measure)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().clamp_min(1e-12)
    return ((actual.float() - expected.float()).abs().max() / scale).item()
