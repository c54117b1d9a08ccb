"""The command line's low-VRAM options: block swap and offload give the resident run's video, bit for bit."""

from __future__ import annotations

import pytest
import torch

from uniworld_core.__main__ import main
from uniworld_core.media import read_webp


def _run(tmp_path, name: str, *flags: str) -> torch.Tensor:
    out = tmp_path / f"{name}.webp"
    assert main(["generate", *flags, "--out", str(out)]) == 0
    return read_webp(out)


@pytest.mark.parametrize("preset,swap", [("tiny", "2"), ("miniature", "3")])
def test_block_swap_and_offload_equal_the_resident_run(tmp_path, capsys, preset, swap):
    common = ("--preset", preset, "--steps", "3", "--frames", "5", "--seed", "3")
    resident = _run(tmp_path, "resident", *common, "--blocks-to-swap", "0")
    swapped = _run(tmp_path, "swapped", *common, "--blocks-to-swap", swap, "--offload")
    printed = capsys.readouterr().out
    assert f"{swap} swapped" in printed, printed
    assert torch.equal(resident, swapped)
    budget = _run(tmp_path, "budget", *common, "--vram-budget", "0.0001", "--prefetch-blocks", "0")
    assert "DiT placement:" in capsys.readouterr().out
    assert torch.equal(resident, budget)
