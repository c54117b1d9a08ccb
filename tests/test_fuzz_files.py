"""Fuzzing: 200+ mutated files of each kind through the loaders and the command line.

Mutations: bit flips, truncations, header edits (a tensor's shape, dtype or offsets, a GGUF field) and
shape edits. Every file must load or be refused with a CheckpointError naming it, within seconds; the
command line must answer with exit code 0, 1 (inspect found problems) or 2 and one error line.
"""

from __future__ import annotations

import json
import random
import struct
import time
import warnings
from pathlib import Path

import pytest
from lora_files import step_distill_lora
from safetensors.torch import save_file
from tiny_models import tiny_dit

from uniworld_core import CheckpointError, load, quantize_file, read_lora
from uniworld_core.__main__ import main

CASES = 200
SECONDS = 10


def _flip_bits(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _edit_safetensors_header(data: bytes, rng: random.Random) -> bytes:
    """Change one tensor entry of the JSON header: its shape, dtype or data offsets."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    name = rng.choice([k for k in header if k != "__metadata__"])
    entry = header[name]
    edit = rng.choice(["shape", "dtype", "offsets", "drop"])
    if edit == "shape":
        entry["shape"] = [max(0, s + rng.choice([-1, 1, 7])) for s in entry["shape"]] or [3]
    elif edit == "dtype":
        entry["dtype"] = rng.choice(["F16", "BF16", "I64", "U8", "F8_E4M3", "XX"])
    elif edit == "offsets":
        start, end = entry["data_offsets"]
        entry["data_offsets"] = [start + rng.randint(-64, 64), end + rng.randint(-64, 64)]
    else:
        del header[name]
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + length:]


def _mutate(data: bytes, rng: random.Random, header_edit=None) -> bytes:
    kind = rng.choice(["flip", "truncate", "header", "flip+truncate"])
    if kind == "header" and header_edit is not None:
        try:
            return header_edit(data, rng)
        except (ValueError, KeyError, IndexError, json.JSONDecodeError, struct.error):
            kind = "flip"
    out = bytearray(data)
    if "flip" in kind or kind == "header":
        _flip_bits(out, rng)
    if "truncate" in kind:
        out = out[: rng.randrange(len(out))]
    return bytes(out)


def _named_refusal_or_load(attempt, path: Path) -> str:
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attempt()
        outcome = "loaded"
    except CheckpointError as exc:
        assert path.name in str(exc), f"the error does not name the file: {exc}"
        outcome = "refused"
    assert time.perf_counter() - started < SECONDS, f"{path.name} took too long"
    return outcome


def _fuzz(tmp_path: Path, source: bytes, suffix: str, attempt, header_edit=None, seed: int = 0) -> dict:
    rng = random.Random(seed)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(CASES):
        path = tmp_path / f"fuzz_{i}{suffix}"
        path.write_bytes(_mutate(source, rng, header_edit))
        outcomes[_named_refusal_or_load(lambda p=path: attempt(p), path)] += 1
        path.unlink()
    return outcomes


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sources")
    model = tiny_dit()
    save_file(model.state_dict(), str(folder / "dit.safetensors"))
    quantize_file(folder / "dit.safetensors", folder / "dit.gguf", "Q8_0")
    save_file(step_distill_lora(model)[0], str(folder / "lora.safetensors"))
    return folder, model


def test_fuzzed_safetensors_dits(tmp_path, sources):
    folder, _ = sources
    outcomes = _fuzz(tmp_path, (folder / "dit.safetensors").read_bytes(), ".safetensors",
                     lambda p: load(p, "dit"), _edit_safetensors_header, seed=1)
    assert outcomes["refused"] > CASES // 4, outcomes


def test_fuzzed_gguf_dits(tmp_path, sources):
    folder, _ = sources
    outcomes = _fuzz(tmp_path, (folder / "dit.gguf").read_bytes(), ".gguf", lambda p: load(p, "dit"), seed=2)
    assert outcomes["refused"] > CASES // 4, outcomes


def test_fuzzed_loras(tmp_path, sources):
    folder, model = sources
    outcomes = _fuzz(tmp_path, (folder / "lora.safetensors").read_bytes(), ".safetensors",
                     lambda p: read_lora(p, model), _edit_safetensors_header, seed=3)
    assert outcomes["refused"] > CASES // 4, outcomes


@pytest.mark.parametrize("name", ["dit.safetensors", "dit.gguf"])
def test_fuzzed_files_through_the_command_line(tmp_path, sources, capsys, name):
    """`inspect` on every mutant: exit 0, 1 or 2, and a refusal is one line naming the file."""
    folder, _ = sources
    rng = random.Random(4)
    source = (folder / name).read_bytes()
    codes = {0: 0, 1: 0, 2: 0}
    edit = _edit_safetensors_header if name.endswith(".safetensors") else None
    for i in range(CASES):
        path = tmp_path / f"cli_{i}_{name}"
        path.write_bytes(_mutate(source, rng, edit))
        started = time.perf_counter()
        code = main(["inspect", str(path)])
        assert time.perf_counter() - started < SECONDS
        err = capsys.readouterr().err
        codes[code] += 1
        if code:
            assert err.count("\n") == 1 and path.name in err, err
        path.unlink()
    assert codes[1] + codes[2] > CASES // 4, codes
