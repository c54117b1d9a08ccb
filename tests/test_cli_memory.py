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


@pytest.mark.parametrize("dim_mult,temporal,grid", [((1, 2, 4, 4), (False, True, True), (5, 8, 12)),
                                                     ((1, 2, 4), (True, True), (5, 16, 24)),
                                                     ((1, 2), (True,), (9, 32, 48))])
def test_the_memory_check_reads_the_latent_grid_from_the_vae(dim_mult, temporal, grid):
    """The grid the memory planner sizes is the VAE's own (a 4x-in-space VAE has 4x the latents of Wan's 8x)."""
    from argparse import Namespace

    from uniworld_core.__main__ import _run_grid
    from uniworld_core.model import VAEConfig

    args = Namespace(frames=17, run_frames=17, context_frames=2, new_frames=3, height=64, width=96)
    assert _run_grid(args, VAEConfig(dim_mult=dim_mult, temporal_downsample=temporal)) == grid
