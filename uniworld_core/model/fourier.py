"""Fourier guidance: the high-frequency part of the first-frame latent.

FFT over (H, W), centre the spectrum, zero every bin whose radius from the
centre is below a cutoff, inverse FFT, and take the magnitude. The cutoff is
either given as a radius, or chosen so that the low-frequency disc holds a
fraction R of the spectral magnitude: bins are sorted by radius, their
channel-mean magnitudes summed cumulatively, and the cutoff is the radius of
the first bin where the sum reaches R of the total. R is the "Fourier ratio":
training draws it from U[0.05, 0.95]; inference uses 0.1 (the default in
`sampling.defaults`).
"""

from __future__ import annotations

import torch

from ..errors import InputError

TRAINING_FOURIER_RATIOS = (0.05, 0.95)
_MAG_EPS = 1e-12


def _magnitude(z: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(z.real.square() + z.imag.square() + _MAG_EPS)


def frequency_radius(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Distance of every centred-spectrum bin from the zero frequency, [H, W]."""
    rows = torch.arange(height, device=device, dtype=torch.float32) - height // 2
    cols = torch.arange(width, device=device, dtype=torch.float32) - width // 2
    return torch.sqrt(rows[:, None].square() + cols[None, :].square())


def energy_cutoff(spectrum: torch.Tensor, radius: torch.Tensor,
                  fourier_ratio: torch.Tensor) -> torch.Tensor:
    """Per-sample cutoff radius [B] so that the disc inside holds `fourier_ratio` [B]."""
    order = torch.argsort(radius.flatten())
    sorted_radius = radius.flatten()[order]
    energy = _magnitude(spectrum).mean(dim=1).flatten(1)[:, order]  # [B, H*W]
    cumulative = energy.cumsum(dim=1)
    target = cumulative[:, -1:] * fourier_ratio[:, None]
    first = (cumulative < target).sum(dim=1).clamp(max=sorted_radius.numel() - 1)
    return sorted_radius[first]


def high_frequency(latent: torch.Tensor, fourier_ratio: float | torch.Tensor | None = None,
                   cutoff_radius: float | None = None, magnitude: bool = True) -> torch.Tensor:
    """High-pass a first-frame latent [B, C, H, W] (or [B, C, 1, H, W]) in float32.

    Give `fourier_ratio` (scalar or per-sample [B]) or an explicit `cutoff_radius`.
    `magnitude=False` returns the real part instead of |.| (a variant of the paper).
    """
    squeeze_time = latent.ndim == 5
    if squeeze_time:
        if latent.shape[2] != 1:
            raise InputError(f"a first-frame latent with {latent.shape[2]} frames",
                             "exactly one latent frame", "Pass latents[:, :, :1].")
        latent = latent[:, :, 0]
    if latent.ndim != 4:
        raise InputError(f"a latent of shape {tuple(latent.shape)}", "[B, C, H, W]")
    batch, _, height, width = latent.shape
    spectrum = torch.fft.fftshift(torch.fft.fft2(latent.float()), dim=(-2, -1))
    radius = frequency_radius(height, width, latent.device)
    if cutoff_radius is not None:
        cutoff = torch.full((batch,), float(cutoff_radius), device=latent.device)
    else:
        if fourier_ratio is None:
            raise InputError("no Fourier ratio and no cutoff radius", "one of the two")
        ratio = torch.as_tensor(fourier_ratio, dtype=torch.float32, device=latent.device)
        cutoff = energy_cutoff(spectrum, radius, ratio.expand(batch).clamp(0.0, 1.0))
    keep = (radius[None] >= cutoff[:, None, None]).float()[:, None]  # [B, 1, H, W]
    spatial = torch.fft.ifft2(torch.fft.ifftshift(spectrum * keep, dim=(-2, -1)))
    out = _magnitude(spatial) if magnitude else spatial.real
    return out[:, :, None] if squeeze_time else out


def fourier_features(start_frame_latents: torch.Tensor, num_frames: int,
                     fourier_ratio: float | torch.Tensor) -> torch.Tensor:
    """DiT Fourier input: high-frequency magnitude of [B, C, 1, H, W], repeated to num_frames."""
    return high_frequency(start_frame_latents, fourier_ratio).expand(-1, -1, num_frames, -1, -1)


def sample_fourier_ratio(batch: int, generator: torch.Generator | None = None,
                        low: float = TRAINING_FOURIER_RATIOS[0],
                        high: float = TRAINING_FOURIER_RATIOS[1]) -> torch.Tensor:
    """Training: one ratio per sample from U[low, high]."""
    return torch.rand(batch, generator=generator) * (high - low) + low
