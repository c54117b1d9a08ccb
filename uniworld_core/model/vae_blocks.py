"""Building blocks of the Wan2.1 3-D causal VAE.

Causality in time lets a video go through in chunks (first frame alone, then
4 frames at a time when encoding; one latent frame at a time when decoding).
Each causal conv remembers the last `CACHE_FRAMES` input frames of the
previous chunk in a `CausalCache`, so chunked processing equals processing the
whole clip at once while memory stays bounded by one chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CACHE_FRAMES = 2


class CausalCache(dict):
    """Per-module memory of the previous chunk, keyed by the module itself."""


class CausalConv3d(nn.Conv3d):
    """Conv3d padded only towards the past in time (zeros before frame 0)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        pt, ph, pw = self.padding
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)
        self.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        time_pad = self.time_pad
        if cache is not None and time_pad > 0:
            previous = cache.get(self)
            tail = x[:, :, -CACHE_FRAMES:]
            if tail.shape[2] < CACHE_FRAMES and previous is not None:
                tail = torch.cat([previous[:, :, -1:], tail], dim=2)
            cache[self] = tail.detach().clone()
            if previous is not None:
                x = torch.cat([previous.to(x.dtype), x], dim=2)
                time_pad -= previous.shape[2]
        x = F.pad(x, (*self.space_pad, time_pad, 0))
        return super().forward(x)


class RMSNorm(nn.Module):
    """Channel-first RMS norm: L2-normalise over channels, scale by sqrt(C) * gamma."""

    def __init__(self, dim: int, images: bool = True):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *((1, 1) if images else (1, 1, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 statistics; the result keeps the input dtype for the next conv.
        return (F.normalize(x.float(), dim=1) * self.scale * self.gamma.float()).to(x.dtype)


class Upsample2x(nn.Upsample):
    """Nearest 2x upsampling computed in float32 (bf16 nearest is not supported everywhere)."""

    def __init__(self):
        super().__init__(scale_factor=(2.0, 2.0), mode="nearest-exact")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type_as(x)


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D module to every frame of [B, C, T, H, W]."""
    b, t = x.shape[0], x.shape[2]
    y = module(x.transpose(1, 2).flatten(0, 1))
    return y.unflatten(0, (b, t)).transpose(1, 2)


class Resample(nn.Module):
    """Spatial 2x down/up sampling, with an optional causal 2x in time.

    The first chunk (the first frame) is never resampled in time, which is
    what makes 1 + 4k frames map to 1 + k latents and back.
    """

    def __init__(self, dim: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if self.mode == "upsample3d" and cache is not None:
            x = self._double_frames(x, cache)
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d" and cache is not None:
            x = self._halve_frames(x, cache)
        return x

    def _double_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if self not in cache:  # first chunk: no time upsampling; later chunks see zeros before it
            cache[self] = True
            cache[self.time_conv] = torch.zeros_like(x[:, :, :1]).repeat(1, 1, CACHE_FRAMES, 1, 1)
            return x
        b, c, t, h, w = x.shape
        y = self.time_conv(x, cache).reshape(b, 2, c, t, h, w)
        return torch.stack((y[:, 0], y[:, 1]), dim=3).reshape(b, c, 2 * t, h, w)

    def _halve_frames(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        previous = cache.get(self)
        cache[self] = x[:, :, -1:].detach().clone()
        if previous is None:  # first chunk passes through untouched
            return x
        return self.time_conv(torch.cat([previous, x], dim=2))


class ResidualBlock(nn.Module):
    """RMSNorm -> SiLU -> CausalConv3d, twice, plus a 1x1x1 shortcut when widths differ."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False), nn.SiLU(), nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        return x + _per_frame(self._attend, x)

    def _attend(self, frames: torch.Tensor) -> torch.Tensor:
        n, c, h, w = frames.shape
        q, k, v = self.to_qkv(self.norm(frames)).reshape(n, 1, 3 * c, h * w).transpose(2, 3).chunk(3, -1)
        out = F.scaled_dot_product_attention(q, k, v)  # [N, 1, HW, C]
        return self.proj(out.squeeze(1).transpose(1, 2).reshape(n, c, h, w))
