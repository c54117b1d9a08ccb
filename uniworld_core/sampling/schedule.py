"""Flow-matching noise schedule and the FlashI2V training interpolation.

sigma runs from 1 (noise) to 0 (clean); the model is given timestep
sigma*1000 and predicts the velocity `noise - clean`. A shift s bends the
schedule towards high noise: sigma' = s*sigma / (1 + (s-1)*sigma).
"""

from __future__ import annotations

import math

import torch

from .defaults import REPORT

# Resolution-dependent shift: log(shift) is linear in the token count of a frame.
DYNAMIC_SHIFT_SEQ = (256, 4096)
DYNAMIC_SHIFT_LOG = (0.5, 1.15)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Apply the time shift s*sigma / (1 + (s-1)*sigma)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def dynamic_shift(latent_height: int, latent_width: int) -> float:
    """Resolution-dependent shift from the per-frame token count (H*W/4 for 2x2 patches)."""
    seq = latent_height * latent_width // 4
    (s0, s1), (l0, l1) = DYNAMIC_SHIFT_SEQ, DYNAMIC_SHIFT_LOG
    slope = (l1 - l0) / (s1 - s0)
    return math.exp(slope * seq + (l0 - slope * s0))


def inference_sigmas(steps: int, shift: float = REPORT.shift) -> torch.Tensor:
    """The steps+1 sigmas of a sampling run: linspace(1, 0) then shifted."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1), shift)


def timesteps_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """The DiT's timestep convention: sigma * 1000."""
    return sigmas * 1000.0


def sample_training_sigmas(batch: int, shift: float = 1.0, logit_normal: bool = True,
                           mean: float = 0.0, std: float = 1.0,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Training sigmas: logit-normal (sigmoid of a normal) or uniform, then shifted."""
    if logit_normal:
        sigmas = torch.sigmoid(torch.randn(batch, generator=generator) * std + mean)
    else:
        sigmas = torch.rand(batch, generator=generator)
    return shift_sigmas(sigmas, shift)


def training_pair(clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
                  start_frame_proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashI2V interpolation and target, in float32.

    x_t = sigma*noise + (1-sigma)*clean - proj(z_img); target = noise - clean.
    """
    sigma = sigma.float().reshape(-1, *([1] * (clean.ndim - 1)))
    clean, noise = clean.float(), noise.float()
    x_t = sigma * noise + (1 - sigma) * clean - start_frame_proj.float()
    return x_t, noise - clean
