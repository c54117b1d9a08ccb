"""The whole image-to-video loop as a plain Python API (no ComfyUI needed).

    image + context features + settings -> latents -> frames

Text/VLM encoding is separate: `context` is what the conditioning model
produces ([B, L, text_dim], before the DiT's `text_embedding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .dit import WanDiT
from .errors import InputError
from .media import fit_image, video_to_frames
from .progress import ProgressHook
from .sampler import SamplerSettings, sample
from .vae import WanVAE

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FRAMES, DEFAULT_FPS = 832, 480, 49, 16


@dataclass(frozen=True)
class VideoSettings:
    """Output geometry and seed (defaults from the technical report)."""

    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    num_frames: int = DEFAULT_FRAMES
    seed: int = 0
    fps: int = DEFAULT_FPS


def latent_shape(video: VideoSettings, vae: WanVAE, batch: int = 1) -> tuple[int, ...]:
    """[B, z, 1+(F-1)/4, H/8, W/8], or an InputError naming the impossible setting."""
    factor_t, factor_s = vae.cfg.temporal_factor, vae.cfg.spatial_factor
    multiple = 2 * factor_s  # the DiT's 2x2 patches need even latent sizes
    if video.num_frames < 1 or (video.num_frames - 1) % factor_t:
        raise InputError(f"{video.num_frames} frames", f"a frame count of the form {factor_t}k+1 "
                         "(e.g. 17, 33, 49, 81)", "Pick the nearest such count.")
    if video.width % multiple or video.height % multiple or min(video.width, video.height) < multiple:
        raise InputError(f"a resolution of {video.width}x{video.height}",
                         f"width and height that are positive multiples of {multiple}",
                         "Round to a multiple of 16, e.g. 832x480.")
    return (batch, vae.cfg.z_dim, 1 + (video.num_frames - 1) // factor_t,
            video.height // factor_s, video.width // factor_s)


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from `seed`, so every device gets the same video."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)


def encode_start_frame(vae: WanVAE, image: torch.Tensor, video: VideoSettings,
                       device: torch.device) -> torch.Tensor:
    """[H, W, 3] image in 0..1 -> normalised first-frame latent [1, z, 1, h, w]."""
    pixels = fit_image(image, video.width, video.height).to(device)
    return vae.encode_image(pixels)


def generate_latents(dit: WanDiT, vae: WanVAE, image: torch.Tensor | None, context: torch.Tensor,
                     negative_context: torch.Tensor | None = None,
                     video: VideoSettings = VideoSettings(),
                     sampler: SamplerSettings = SamplerSettings(),
                     progress: ProgressHook | None = None,
                     start_latents: torch.Tensor | None = None) -> torch.Tensor:
    """Image (or its first-frame latent) + context -> normalised video latents [1, z, F', h, w]."""
    device = dit.patch_embedding.weight.device
    shape = latent_shape(video, vae)
    dit.check_context(context, 1)
    if negative_context is not None:
        dit.check_context(negative_context, 1)
    if start_latents is None:
        start_latents = encode_start_frame(vae, image, video, device)
    start = start_latents.to(device)
    noise = initial_noise(shape, video.seed, device)
    dtype = dit.patch_embedding.weight.dtype
    return sample(dit, noise, start, context.to(device, dtype),
                  None if negative_context is None else negative_context.to(device, dtype),
                  sampler, progress=progress)


def decode_frames(vae: WanVAE, latents: torch.Tensor,
                  progress: ProgressHook | None = None) -> torch.Tensor:
    """Normalised latents -> [T, H, W, 3] frames in 0..1."""
    return video_to_frames(vae.decode(latents, progress=progress))


def generate(dit: WanDiT, vae: WanVAE, image: torch.Tensor, context: torch.Tensor,
             negative_context: torch.Tensor | None = None,
             video: VideoSettings = VideoSettings(),
             sampler: SamplerSettings = SamplerSettings(),
             progress: ProgressHook | None = None) -> torch.Tensor:
    """The whole loop: returns [T, H, W, 3] frames in 0..1."""
    latents = generate_latents(dit, vae, image, context, negative_context, video, sampler, progress)
    return decode_frames(vae, latents)
