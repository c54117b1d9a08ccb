"""The FlashI2V / Uniworld-OSP2.0 training objective.

For clean latents x0 of a clip (its first latent frame is the first-frame
latent: the causal VAE encodes frame 0 alone): sigma from a logit-normal
distribution with the resolution-dependent shift, x_t = sigma*noise +
(1-sigma)*x0 - proj(x0[:, :, :1]) (latent shifting), Fourier features of the
first frame at a Fourier ratio drawn from U[0.05, 0.95], the prompt dropped
(replaced by the empty prompt's features) with probability 0.1, and the MSE
between the DiT's velocity and noise - x0.

Continuation (issue #23), on a share of the batches: the first k latent frames of
a window of the clip (k drawn from 1 to `max_context`, the window starting at a
random latent frame) are clean context at timestep 0, shifted like the rest, as
the sampler's `prefix` gives them; only the frames after them are noised, and the
loss is theirs alone. With a `window` shorter than the clips, every batch is one
window of that many frames, continuations starting past the clip's first frame.
The start-frame conditioning stays the clip's first frame, as it does for every
chunk of a long video.
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
    continuation: float = 0.0  # share of batches trained as continuations (0 = plain I2SV, the official recipe)
    max_context: int = 4  # most context latent frames a continuation batch draws
    # Context corruption (0 = off): a continuation batch's context becomes (1 - s) * clean + s * noise with
    # s ~ U[0, context_noise], still at timestep 0, so the DiT learns not to trust its context exactly: at
    # inference the context is its own imperfect output.
    context_noise: float = 0.0
    # Self-estimated context (0 = off): a continuation batch's context becomes the DiT's own one-step estimate
    # of it from noise level s ~ U[0, context_estimate] (no gradient). The sampler's chunks are soft and fade
    # their objects; clean VAE latents never are. With this the DiT learns to continue context as imperfect as
    # its own output. Measured on the miniature: no gain over clean context, as with context_noise
    # (docs/training.md, run 14).
    context_estimate: float = 0.0
    # Training window in latent frames (0 = the whole clip). On clips longer than it (issue #23's long toy
    # clips), an I2SV batch takes the clip's first `window` frames and a continuation batch a window starting at
    # latent frame 1 or later: exactly the shape of an inference continuation, whose context is never the
    # clip's first (single-frame) latent.
    window: int = 0
    # Region weighting (0 = off): where a clip's cache holds `loss_mask` (latent cells [1, F, h, w] in 0..1,
    # e.g. the toy world's objects), each cell's squared error counts 1 + region_weight * mask times, the
    # weights normalised to mean 1. The toy objects cover 9-33% of the latent cells: unweighted, a small DiT fits
    # the backgrounds and styles and leaves the objects as faint blobs (issue #20).
    region_weight: float = 0.0


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
    found = {"noise": noise[part], "sigma": sigma[part], "ratio": ratio[part], "drop": drop[part]}
    if cfg.continuation > 0:  # drawn after the rest: plain runs keep their stream
        found.update(_continuation_draw(shape, cfg, generator, part))
    return found


def _continuation_draw(shape: tuple[int, ...], cfg: ObjectiveConfig, generator: torch.Generator,
                       part: slice = slice(None)) -> dict[str, torch.Tensor]:
    """A batch's context length k (0 = an I2SV batch), the latent frame its window starts at and the context
    corruption draws (the per-sample ones cut to this process's `part`)."""
    frames = shape[2]
    use = float(torch.rand(1, generator=generator)) < cfg.continuation and frames > 1
    fixed = 0 < cfg.window < frames  # a window of `window` frames, mid-clip for continuations
    span = cfg.window if fixed else frames
    k = int(torch.randint(1, min(cfg.max_context, span - 1) + 1, (1,), generator=generator)) if use else 0
    if fixed:
        offset = int(torch.randint(1, frames - span + 1, (1,), generator=generator)) if use else 0
    else:
        offset = int(torch.randint(0, frames - k, (1,), generator=generator)) if use else 0  # >= 1 new frame
    found = {"context_frames": torch.tensor(k), "offset": torch.tensor(offset)}
    if cfg.context_noise > 0:  # drawn last: runs without it keep their stream
        found["context_noise"] = torch.rand(1, generator=generator)[0] * cfg.context_noise * use
    if cfg.context_estimate > 0:  # after context_noise, for the same reason
        found["context_estimate"] = torch.rand(1, generator=generator)[0] * cfg.context_estimate * use
        noise = torch.randn((shape[0], shape[1], max(k, 1), *shape[3:]), generator=generator)
        found["estimate_noise"] = noise[part]
    return found


def flashi2v_loss(dit: WanDiT, clean: torch.Tensor, context: torch.Tensor, empty_context: torch.Tensor,
                  cfg: ObjectiveConfig, generator: torch.Generator | None = None,
                  draws: dict[str, torch.Tensor] | None = None,
                  start: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One training loss for clean latents [B, 16, F, h, w] and context [B, L, D] (adapter output).

    `start` is the condition image's latent [B, 16, 1, h, w]; by default the clip's own first frame
    (image-to-video). For image-to-stylized-video it can be another image (e.g. the unstyled photo).
    With continuation draws (`cfg.continuation`), a window of the clip continues its clean context.
    `mask` [B, 1, F, h, w] weights the error by `cfg.region_weight` (see ObjectiveConfig).
    """
    device = clean.device
    draws = draws if draws is not None else draw(tuple(clean.shape), cfg, generator)
    noise, sigma = draws["noise"].to(device), draws["sigma"].to(device)
    start = clean[:, :, :1] if start is None else start.to(device)
    proj = dit.project_start(start)
    k, offset = int(draws.get("context_frames", 0)), int(draws.get("offset", 0))
    end = offset + cfg.window if 0 < cfg.window < clean.shape[2] else None
    clean, noise = clean[:, :, offset:end], noise[:, :, offset:end]  # the window (else the clip from `offset`)
    mask = mask[:, :, offset:end].to(device) if mask is not None and cfg.region_weight > 0 else None
    x_t, target = training_pair(clean, noise, sigma, proj)
    t = timesteps_from_sigmas(sigma)
    features = high_frequency(start, draws["ratio"].to(device)).expand(-1, -1, clean.shape[2], -1, -1)
    drop = draws["drop"].to(device)
    context = torch.where(drop[:, None, None], empty_context.expand_as(context), context)
    dtype = dit.patch_embedding.weight.dtype
    if k:  # clean context before the noised frames, at timestep 0 (per-frame time terms)
        context_frames = clean[:, :, :k].float()
        e = float(draws.get("context_estimate", 0.0))
        if e > 0:
            context_frames = _estimate(dit, context_frames, draws["estimate_noise"][:, :, :k].to(device), e, proj,
                                       context.to(dtype), features[:, :, :k].to(dtype))
        s = float(draws.get("context_noise", 0.0))  # the noise of the context slots is otherwise unused
        context_frames = (1 - s) * context_frames + s * noise[:, :, :k].float()
        x_t = torch.cat([context_frames - proj.float(), x_t[:, :, k:]], dim=2)
        t = torch.cat([torch.zeros(t.shape[0], k, device=device), t[:, None].expand(-1, clean.shape[2] - k)], 1)
    velocity = dit(x_t.to(dtype), t, context.to(dtype), features.to(dtype))
    if mask is None:
        return F.mse_loss(velocity[:, :, k:].float(), target[:, :, k:])
    return weighted_mse(velocity[:, :, k:].float(), target[:, :, k:], 1 + cfg.region_weight * mask[:, :, k:])


@torch.no_grad()
def _estimate(dit: WanDiT, clean: torch.Tensor, noise: torch.Tensor, sigma: float, proj: torch.Tensor,
              context: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The DiT's one-step estimate of clean latents [B, z, k, h, w] from their noised copy at `sigma`:
    x0 = x_t + proj - sigma * v (the FlashI2V pair inverted), in float32."""
    sigmas = torch.full((clean.shape[0],), sigma, device=clean.device)
    x_t, _ = training_pair(clean, noise, sigmas, proj)
    t = timesteps_from_sigmas(sigmas)[:, None].expand(-1, clean.shape[2])
    velocity = dit(x_t.to(features.dtype), t, context, features).float()
    return x_t + proj.float() - sigma * velocity


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The mean squared error with per-cell weights (broadcast over channels), normalised to mean weight 1."""
    weights = weights.float().expand_as(target)
    return (weights * (prediction - target).square()).sum() / weights.sum()
