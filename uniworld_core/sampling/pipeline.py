"""The whole image-to-video loop as a plain Python API (no ComfyUI needed).

    image --encode_start--> StartFrame (latent + Fourier map, once per image and size)
    StartFrame + context features + settings --generate_latents--> latents --decode_frames--> frames

Text/VLM encoding is separate: `context` is what the conditioning model
produces ([B, L, text_dim], before the DiT's `text_embedding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..media import fit_image, image_digest, video_to_frames
from ..model.dit import WanDiT
from ..model.fourier import high_frequency
from ..model.vae import WanVAE
from ..parallel import Parallel
from ..progress import ProgressHook
from .cache import CacheStats
from .defaults import REPORT
from .sampler import SamplerSettings, sample


@dataclass(frozen=True)
class VideoSettings:
    """Output geometry and seed (defaults from the technical report)."""

    width: int = REPORT.width
    height: int = REPORT.height
    num_frames: int = REPORT.frames
    seed: int = REPORT.seed
    fps: int = REPORT.fps


@dataclass(frozen=True)
class StartFrame:
    """The first frame, encoded once: what the sampler and the Fourier preview share.

    latents: [1, z, 1, h, w] normalised VAE latent; high_frequencies: its Fourier
    map at `fourier_ratio` (same shape); `image` is the digest of the source picture.
    """

    latents: torch.Tensor
    high_frequencies: torch.Tensor
    fourier_ratio: float
    width: int
    height: int
    image: str

    def check_matches(self, video: VideoSettings, image: torch.Tensor | None = None) -> None:
        """Refuse a start frame made for another size or another picture."""
        if (self.width, self.height) != (video.width, video.height):
            raise InputError(f"a start frame encoded at {self.width}x{self.height}",
                             f"the sampling size {video.width}x{video.height}",
                             "Give the Fourier Cutoff node the same width and height as the sampler.")
        if image is not None and image_digest(image) != self.image:
            raise InputError("a start image that differs from the one the Fourier Cutoff node encoded",
                             "the same image in both", "Connect one image to both nodes.")


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


def encode_start(vae: WanVAE, image: torch.Tensor, width: int, height: int,
                 fourier_ratio: float = REPORT.fourier_ratio, device: torch.device | None = None) -> StartFrame:
    """Encode the start image and compute its Fourier map once (the VAE must be on `device`)."""
    if not 0.0 <= fourier_ratio <= 1.0:
        raise InputError(f"a Fourier ratio of {fourier_ratio}", "a share of spectral energy between 0 and 1",
                         f"The official inference value is {REPORT.fourier_ratio}.")
    video = VideoSettings(width=width, height=height, num_frames=1)
    latent_shape(video, vae)
    device = device or next(vae.parameters()).device
    latents = encode_start_frame(vae, image, video, device)
    return StartFrame(latents, high_frequency(latents, fourier_ratio), fourier_ratio, width, height,
                      image_digest(image))


def generate_latents(dit: WanDiT, vae: WanVAE, image: torch.Tensor | None, context: torch.Tensor,
                     negative_context: torch.Tensor | None = None,
                     video: VideoSettings = VideoSettings(),
                     sampler: SamplerSettings = SamplerSettings(),
                     progress: ProgressHook | None = None,
                     start: StartFrame | None = None,
                     stats: CacheStats | None = None,
                     parallel: Parallel | None = None) -> torch.Tensor:
    """Image (or its StartFrame) + context -> normalised video latents [1, z, F', h, w].

    With `start`, its Fourier ratio is the one used (`sampler.fourier_ratio` is ignored).
    With `parallel` (uniworld_core.parallel.start), every process of the run calls this with the
    same arguments; they share the DiT's work and all return the latents.
    """
    device = dit.patch_embedding.weight.device
    shape = latent_shape(video, vae)
    dit.check_context(context, 1)
    if negative_context is not None:
        dit.check_context(negative_context, 1)
    if start is None:
        start = encode_start(vae, image, video.width, video.height, sampler.fourier_ratio)
    else:
        start.check_matches(video)
    noise = initial_noise(shape, video.seed, device)
    dtype = dit.patch_embedding.weight.dtype
    return sample(dit, noise, start.latents.to(device), context.to(device, dtype),
                  None if negative_context is None else negative_context.to(device, dtype),
                  sampler, progress=progress, high_frequencies=start.high_frequencies.to(device), stats=stats,
                  parallel=parallel)


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
