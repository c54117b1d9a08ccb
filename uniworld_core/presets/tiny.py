"""The `tiny` demo stack: a small DiT and VAE with weights drawn from a fixed seed.

Random weights prove that the pipeline runs end to end (encode, Fourier
guidance, latent shifting, CFG sampling, chunked decode); they do not make a
meaningful video. Real weights come from files (see the README).
"""

from __future__ import annotations

import torch
from torch import nn

from ..device import cast_model
from ..model.attention import AttentionFn, sdpa_attention
from ..model.config import DIT_PRESETS, VAE_PRESETS
from ..model.dit import WanDiT
from ..model.vae import WanVAE

TINY_NOTICE = ("Note: the 'tiny' preset uses random weights from a fixed seed. It proves the "
               "pipeline end to end; the video itself is noise. Pass --dit/--vae/--context "
               "files for real output.")


def _wake_zero_outputs(model: nn.Module, generator: torch.Generator) -> None:
    """Give zero-initialised output layers small random values, so every path is exercised."""
    for param in model.parameters():
        if param.is_floating_point() and not param.any():
            param.data = torch.randn(param.shape, generator=generator) * 0.02


def tiny_stack(seed: int = 0, device: torch.device = torch.device("cpu"),
               dtype: torch.dtype = torch.float32,
               attention: AttentionFn = sdpa_attention) -> tuple[WanDiT, WanVAE]:
    """(DiT, VAE) of the tiny preset with weights from `seed`."""
    torch.manual_seed(seed)
    dit, vae = WanDiT(DIT_PRESETS["tiny"], attention), WanVAE(VAE_PRESETS["tiny"])
    generator = torch.Generator().manual_seed(seed)
    _wake_zero_outputs(dit, generator)
    _wake_zero_outputs(vae, generator)
    return cast_model(dit.eval(), dtype, device), cast_model(vae.eval(), torch.float32, device)


def tiny_context(text_dim: int, tokens: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in (positive, negative) context features for the tiny preset."""
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(1, tokens, text_dim, generator=gen), torch.randn(1, tokens, text_dim, generator=gen)
