"""The FlashI2V sampler: Euler integration of the flow with latent shifting and CFG.

y starts as pure noise; at every step the DiT sees `y - proj(z_img)` and the
Fourier features of the first frame, classifier-free guidance mixes the
conditional and unconditional velocities, and y moves by v * (sigma[i+1] -
sigma[i]). The final y is the clean latent. All latent arithmetic is float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..model.dit import WanDiT
from ..model.flashi2v import shift_latents
from ..model.fourier import high_frequency
from ..parallel import Parallel, cfg_parallel_velocity, sequence_parallel
from ..progress import ProgressHook, report
from .cache import CachedGuidance, CacheSettings, CacheStats
from .defaults import REPORT
from .schedule import inference_sigmas, timesteps_from_sigmas


@dataclass(frozen=True)
class SamplerSettings:
    """Sampling settings with the report's defaults."""

    steps: int = REPORT.steps
    shift: float = REPORT.shift
    guidance_scale: float = REPORT.cfg
    fourier_ratio: float = REPORT.fourier_ratio
    batch_cfg: bool = True  # run cond and uncond as one batch when shapes allow
    cache: CacheSettings = CacheSettings()  # off: every forward runs


def guided_velocity(dit: WanDiT, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                    negative: torch.Tensor | None, features: torch.Tensor,
                    guidance_scale: float, batch_cfg: bool, parallel: Parallel | None = None) -> torch.Tensor:
    """Velocity with classifier-free guidance: uncond + g * (cond - uncond).

    With a CFG-parallel `parallel` layout the two branches run on two processes.
    """
    if negative is None or guidance_scale == 1.0:
        return dit(x, t, context, features).float()
    if parallel is not None and parallel.cfg == 2:
        cond, uncond = cfg_parallel_velocity(dit, parallel, x, t, context, negative, features)
    elif batch_cfg and negative.shape == context.shape:
        both = dit(torch.cat([x, x]), torch.cat([t, t]), torch.cat([context, negative]),
                   torch.cat([features, features])).float()
        cond, uncond = both.chunk(2)
    else:
        cond = dit(x, t, context, features).float()
        uncond = dit(x, t, negative, features).float()
    return uncond + guidance_scale * (cond - uncond)


def _step_inputs(timestep: torch.Tensor, y: torch.Tensor, prefix: torch.Tensor | None):
    """(t, latents) the DiT sees: t [B] for a whole clip; with a clean prefix, t [B, K + F] (0 on the prefix)."""
    batch = y.shape[0]
    if prefix is None:
        return timestep.expand(batch), y
    clean = torch.zeros(batch, prefix.shape[2], device=y.device)
    return torch.cat([clean, timestep.expand(batch, y.shape[2])], dim=1), torch.cat([prefix.float(), y], dim=2)


@torch.no_grad()
def sample(dit: WanDiT, noise: torch.Tensor, start_frame_latents: torch.Tensor,
           context: torch.Tensor, negative_context: torch.Tensor | None = None,
           settings: SamplerSettings = SamplerSettings(),
           sigmas: torch.Tensor | None = None,
           progress: ProgressHook | None = None,
           high_frequencies: torch.Tensor | None = None,
           stats: CacheStats | None = None,
           parallel: Parallel | None = None,
           prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Integrate from `noise` [B, z, F, H, W] to clean (normalised) latents (Wan2.1: z = 16 channels).

    start_frame_latents: [B, z, 1, H, W] normalised VAE latent of the first frame.
    context / negative_context: [B, L, text_dim] features before `text_embedding`.
    high_frequencies: the start frame's Fourier map [B, z, 1, H, W] when already
    computed (a `StartFrame`); else it is computed at `settings.fourier_ratio`.
    stats: what `settings.cache` saved is added to it.
    parallel: the processes of a torch.distributed run (uniworld_core.parallel) that share the work;
    every process calls `sample` with the same arguments and gets the same latents.
    prefix: clean latent frames [B, z, K, H, W] placed before the noisy ones (a continuation's
    context: the video so far). The DiT sees them at timestep 0, shifted like the rest; they are
    not integrated, and only the new frames are returned.
    """
    if start_frame_latents.shape[1] != dit.cfg.in_dim or noise.shape[1] != dit.cfg.in_dim:
        raise InputError(f"VAE latents with {start_frame_latents.shape[1]} channels for a DiT that takes "
                         f"{dit.cfg.in_dim}", "the VAE the DiT was trained with (Wan2.1's: 16 channels)",
                         "Load the matching VAE.")
    if settings.cache.active and parallel is not None and parallel.cfg == 2:
        raise InputError("a sampling cache with CFG parallel", "one of the two: the caches decide per guidance "
                         "branch on one process, CFG parallel puts the branches on two", "Drop one of them.")
    if sigmas is None:
        sigmas = inference_sigmas(settings.steps, settings.shift)
    sigmas = sigmas.to(noise.device, torch.float32)
    timesteps = timesteps_from_sigmas(sigmas)
    proj = dit.project_start(start_frame_latents)  # [B, z, 1, H, W], fp32
    dtype = dit.patch_embedding.weight.dtype
    if high_frequencies is None:
        high_frequencies = high_frequency(start_frame_latents, settings.fourier_ratio)
    context_frames = 0 if prefix is None else prefix.shape[2]
    # the same map for every latent frame: [B, z, K + F, H, W]
    features = high_frequencies.to(noise.device, dtype).expand(-1, -1, context_frames + noise.shape[2], -1, -1)
    y = noise.float()
    steps = len(sigmas) - 1
    guidance = CachedGuidance(dit, settings.cache, steps, settings.guidance_scale, settings.batch_cfg)
    with sequence_parallel(dit, parallel), guidance.active():
        for i in range(steps):
            t, x = _step_inputs(timesteps[i], y, prefix)
            x = shift_latents(x, proj).to(dtype)
            if settings.cache.active:  # its decisions read the gathered output: the same on every process
                v = guidance(i, x, t, context, negative_context, features)
            else:
                v = guided_velocity(dit, x, t, context, negative_context, features,
                                    settings.guidance_scale, settings.batch_cfg, parallel)
            y = y + v[:, :, context_frames:] * (sigmas[i + 1] - sigmas[i])
            report(progress, i + 1, steps, y)
    if stats is not None:
        stats.add(guidance.stats)  # added: runs may share one tally
    return y
