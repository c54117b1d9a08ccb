"""The FlashI2V / Uniworld-OSP2.0 training objective.

For clean latents x0 of a clip (its first latent frame is the first-frame
latent: the causal VAE encodes frame 0 alone): sigma from a logit-normal
distribution with the resolution-dependent shift, x_t = sigma*noise +
(1-sigma)*x0 - proj(x0[:, :, :1]) (latent shifting), Fourier features of the
first frame at a Fourier ratio drawn from U[0.05, 0.95], the prompt dropped
(replaced by the empty prompt's features) with probability 0.1, and the MSE
between the DiT's velocity and noise - x0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from uniworld_core.model import TRAINING_FOURIER_RATIOS, WanDiT, high_frequency, sample_fourier_ratio
from uniworld_core.sampling import dynamic_shift, sample_training_sigmas, timesteps_from_sigmas, training_pair


@dataclass(frozen=True)
class ObjectiveConfig:
    text_drop: float = 0.1
    fourier_range: tuple[float, float] = TRAINING_FOURIER_RATIOS
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float | None = None  # None: resolution-dependent shift


def draw(shape: tuple[int, ...], cfg: ObjectiveConfig, generator: torch.Generator,
         part: slice = slice(None)) -> dict[str, torch.Tensor]:
    """The random draws of one step for a global batch of latents `shape`, then this process's `part`.

    Every process draws the whole batch from the same generator, so splitting a
    batch across processes changes nothing but who computes which sample.
    """
    batch = shape[0]
    noise = torch.randn(shape, generator=generator)
    shift = cfg.shift if cfg.shift is not None else dynamic_shift(shape[3], shape[4])
    sigma = sample_training_sigmas(batch, shift, True, cfg.logit_mean, cfg.logit_std, generator)
    ratio = sample_fourier_ratio(batch, generator, *cfg.fourier_range)
    drop = torch.rand(batch, generator=generator) < cfg.text_drop
    return {"noise": noise[part], "sigma": sigma[part], "ratio": ratio[part], "drop": drop[part]}


def flashi2v_loss(dit: WanDiT, clean: torch.Tensor, context: torch.Tensor, empty_context: torch.Tensor,
                  cfg: ObjectiveConfig, generator: torch.Generator | None = None,
                  draws: dict[str, torch.Tensor] | None = None,
                  start: torch.Tensor | None = None) -> torch.Tensor:
    """One training loss for clean latents [B, 16, F, h, w] and context [B, L, D] (adapter output).

    `start` is the condition image's latent [B, 16, 1, h, w]; by default the clip's own first frame
    (image-to-video). For image-to-stylized-video it can be another image (e.g. the unstyled photo).
    """
    device = clean.device
    draws = draws if draws is not None else draw(tuple(clean.shape), cfg, generator)
    noise, sigma = draws["noise"].to(device), draws["sigma"].to(device)
    start = clean[:, :, :1] if start is None else start.to(device)
    x_t, target = training_pair(clean, noise, sigma, dit.project_start(start))
    features = high_frequency(start, draws["ratio"].to(device)).expand(-1, -1, clean.shape[2], -1, -1)
    drop = draws["drop"].to(device)
    context = torch.where(drop[:, None, None], empty_context.expand_as(context), context)
    dtype = dit.patch_embedding.weight.dtype
    velocity = dit(x_t.to(dtype), timesteps_from_sigmas(sigma), context.to(dtype), features.to(dtype))
    return F.mse_loss(velocity.float(), target)
