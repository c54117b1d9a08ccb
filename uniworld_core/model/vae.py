"""The Wan2.1 VAE: 3-D causal conv encoder/decoder, 4x8x8 compression, 16 channels.

Video goes in as [B, 3, 1+4k, H, W] in [-1, 1] and comes out as normalised
latents [B, 16, 1+k, H/8, W/8]: `(mu - mean) / std` with Wan2.1's public
per-channel constants. Encoding runs the first frame alone and then chunks of
4 frames, decoding one latent frame at a time, each with the causal cache, so
memory does not grow with the clip length (use `decode_chunks` to stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..progress import ProgressHook, report
from .config import VAEConfig
from .vae_blocks import AttentionBlock, CausalCache, CausalConv3d, Resample, ResidualBlock, RMSNorm

# Public per-channel latent statistics of the Wan2.1 VAE.
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def _stat(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1, 1)


def _run(layers: nn.Sequential, x: torch.Tensor, cache: CausalCache | None) -> torch.Tensor:
    for layer in layers:
        takes_cache = isinstance(layer, (CausalConv3d, Resample, ResidualBlock, AttentionBlock))
        x = layer(x, cache) if takes_cache else layer(x)
    return x


def _middle(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim, dropout), AttentionBlock(dim),
                         ResidualBlock(dim, dim, dropout))


def _head(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(dim, images=False), nn.SiLU(), CausalConv3d(dim, out_dim, 3, padding=1))


class Encoder3d(nn.Module):
    """Frames -> 2*z_dim moments, downsampling 8x in space and 4x in time."""

    def __init__(self, cfg: VAEConfig, dropout: float = 0.0):
        super().__init__()
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim, dropout))
                in_dim = out_dim
            if i < len(cfg.dim_mult) - 1:
                temporal = cfg.temporal_downsample[i]
                layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        self.middle = _middle(dims[-1], dropout)
        self.head = _head(dims[-1], 2 * cfg.z_dim)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        for part in (self.downsamples, self.middle, self.head):
            x = _run(part, x, cache)
        return x


class Decoder3d(nn.Module):
    """z_dim latents -> frames, upsampling 8x in space and 4x in time."""

    def __init__(self, cfg: VAEConfig, dropout: float = 0.0):
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.base_dim * m for m in (mult[-1], *mult[::-1])]
        temporal_up = cfg.temporal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], dropout)
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:  # every upsampler halves the width it outputs
                in_dim //= 2
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim, dropout))
                in_dim = out_dim
            if i < len(mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if temporal_up[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = _head(dims[-1], 3)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        x = self.conv1(x, cache)
        for part in (self.middle, self.upsamples, self.head):
            x = _run(part, x, cache)
        return x


class WanVAE(nn.Module):
    """Wan2.1 VAE with official parameter names (`encoder.*`, `decoder.*`, `conv1`, `conv2`)."""

    def __init__(self, cfg: VAEConfig = VAEConfig(), latents_mean=WAN21_LATENTS_MEAN,
                 latents_std=WAN21_LATENTS_STD):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder3d(cfg)
        self.conv1 = CausalConv3d(2 * cfg.z_dim, 2 * cfg.z_dim, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)
        if len(latents_mean) != cfg.z_dim and latents_mean is WAN21_LATENTS_MEAN:
            # Wan2.1's constants are for 16 channels; another width starts unnormalised (set_latent_stats).
            latents_mean, latents_std = [0.0] * cfg.z_dim, [1.0] * cfg.z_dim
        self.register_buffer("latents_mean", _stat(latents_mean), persistent=False)
        self.register_buffer("latents_std", _stat(latents_std), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    def set_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Replace the normalisation constants (e.g. for a retrained VAE)."""
        self.latents_mean.copy_(_stat(mean))
        self.latents_std.copy_(_stat(std))

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        return (mu.float() - self.latents_mean) / self.latents_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z.float() * self.latents_std + self.latents_mean

    def check_video(self, video: torch.Tensor) -> None:
        """Raise InputError unless video is [B, 3, 1+4k, H, W] with H, W multiples of 8."""
        factor_t, factor_s = self.cfg.temporal_factor, self.cfg.spatial_factor
        if video.ndim != 5 or video.shape[1] != 3:
            raise InputError(f"a video tensor of shape {tuple(video.shape)}",
                             "[batch, 3, frames, height, width] RGB in [-1, 1]")
        if (video.shape[2] - 1) % factor_t:
            raise InputError(f"{video.shape[2]} frames", f"a frame count of the form {factor_t}k+1 "
                             "(1, 5, 9, ..., 49, 81)", "Trim or pad the clip.")
        if video.shape[3] % factor_s or video.shape[4] % factor_s:
            raise InputError(f"a frame size of {video.shape[4]}x{video.shape[3]}",
                             f"width and height that are multiples of {factor_s}")

    def moments(self, video: torch.Tensor, progress: ProgressHook | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance (raw latent space), chunk by chunk; differentiable.

        The causal cache carries values, not gradients, from one chunk to the next.
        """
        self.check_video(video)
        step = self.cfg.temporal_factor
        video = video.to(self.dtype)
        cache = CausalCache()
        starts = [0, *range(1, video.shape[2], step)]
        chunks = []
        for n, start in enumerate(starts):
            stop = 1 if start == 0 else start + step
            chunks.append(self.encoder(video[:, :, start:stop], cache))
            report(progress, n + 1, len(starts))
        mu, log_var = self.conv1(torch.cat(chunks, dim=2)).chunk(2, dim=1)
        return mu.float(), log_var.float()

    @torch.no_grad()
    def encode(self, video: torch.Tensor, normalize: bool = True,
               progress: ProgressHook | None = None) -> torch.Tensor:
        """[B, 3, 1+4k, H, W] in [-1, 1] -> posterior mean [B, z, 1+k, H/8, W/8] (float32)."""
        mu = self.moments(video, progress)[0]
        return self.normalize(mu) if normalize else mu

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> first-frame latent [B, z, 1, H/8, W/8]."""
        return self.encode(image.unsqueeze(2), normalize=normalize)

    def reconstruct_chunks(self, latents: torch.Tensor, normalized: bool = True,
                           progress: ProgressHook | None = None) -> Iterator[torch.Tensor]:
        """Decoded frame chunks (1 frame, then 4 per latent frame), unclamped; differentiable."""
        z = self.denormalize(latents) if normalized else latents.float()
        x = self.conv2(z.to(self.dtype))
        cache = CausalCache()
        for i in range(x.shape[2]):
            yield self.decoder(x[:, :, i:i + 1], cache).float()
            report(progress, i + 1, x.shape[2])

    @torch.no_grad()
    def decode_chunks(self, latents: torch.Tensor, normalized: bool = True,
                      progress: ProgressHook | None = None) -> Iterator[torch.Tensor]:
        """Yield decoded frame chunks (1 frame, then 4 per latent frame), unclamped, float32."""
        yield from self.reconstruct_chunks(latents, normalized, progress)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, normalized: bool = True, clamp: bool = True,
               progress: ProgressHook | None = None) -> torch.Tensor:
        """[B, z, 1+k, h, w] latents -> [B, 3, 1+4k, 8h, 8w] video (clamped to [-1, 1])."""
        if latents.ndim != 5 or latents.shape[1] != self.cfg.z_dim:
            raise InputError(f"latents of shape {tuple(latents.shape)}",
                             f"[batch, {self.cfg.z_dim}, frames, height, width]")
        b, _, t, h, w = latents.shape
        s = self.cfg.spatial_factor
        frames = 1 + (t - 1) * self.cfg.temporal_factor
        out = torch.empty(b, 3, frames, h * s, w * s, device=latents.device)
        filled = 0
        for chunk in self.decode_chunks(latents, normalized, progress):
            out[:, :, filled:filled + chunk.shape[2]] = chunk.clamp(-1, 1) if clamp else chunk
            filled += chunk.shape[2]
        return out

    @torch.no_grad()
    def decode_tiled(self, latents: torch.Tensor, tile: int = 32, overlap: int = 8,
                     normalized: bool = True, clamp: bool = True,
                     progress: ProgressHook | None = None) -> torch.Tensor:
        """Decode in overlapping spatial tiles of `tile` latent pixels, blended linearly.

        Peak memory follows the tile, not the frame size (720p on small cards);
        tiles are decoded chunk by chunk in time like `decode`.
        """
        tiles = plan_tiles(latents.shape[3], latents.shape[4], tile, overlap)
        if len(tiles) == 1:
            return self.decode(latents, normalized, clamp, progress)

        def decoded() -> Iterator[torch.Tensor]:
            for n, one in enumerate(tiles):
                yield self.decode(one.crop(latents), normalized, clamp=False)
                report(progress, n + 1, len(tiles))

        return self.blend_tiles(latents, tiles, decoded(), overlap, clamp)

    def blend_tiles(self, latents: torch.Tensor, tiles: list[Tile], decoded: Iterator[torch.Tensor],
                    overlap: int, clamp: bool = True) -> torch.Tensor:
        """The video from decoded tiles (given in `tiles` order), ramps blending the shared edges."""
        b, _, t, h, w = latents.shape
        s = self.cfg.spatial_factor
        frames = 1 + (t - 1) * self.cfg.temporal_factor
        out = torch.zeros(b, 3, frames, h * s, w * s, device=latents.device)
        weight = torch.zeros(1, 1, 1, h * s, w * s, device=latents.device)
        for one, pixels in zip(tiles, decoded, strict=True):
            ramp = _blend_ramp(one.height, one.width, overlap * s, s, one.edges).to(latents.device)
            rows, cols = one.pixels(s)
            out[:, :, :, rows, cols] += pixels * ramp
            weight[:, :, :, rows, cols] += ramp
        out /= weight
        return out.clamp(-1, 1) if clamp else out


@dataclass(frozen=True)
class Tile:
    """One spatial tile of a latent grid: its top-left corner, size and which edges it shares."""

    y: int
    x: int
    height: int
    width: int
    edges: tuple[bool, bool, bool, bool]  # top, left, bottom, right shared with another tile

    def crop(self, latents: torch.Tensor) -> torch.Tensor:
        return latents[:, :, :, self.y:self.y + self.height, self.x:self.x + self.width]

    def pixels(self, scale: int) -> tuple[slice, slice]:
        """Rows and columns of the decoded picture this tile covers."""
        return (slice(self.y * scale, (self.y + self.height) * scale),
                slice(self.x * scale, (self.x + self.width) * scale))


def plan_tiles(h: int, w: int, tile: int, overlap: int) -> list[Tile]:
    """The tiles `decode_tiled` decodes for an h x w latent grid, row by row; one tile when it fits."""
    if tile <= overlap:
        raise InputError(f"a tile of {tile} with an overlap of {overlap}", "a tile larger than its overlap")
    if h <= tile and w <= tile:
        return [Tile(0, 0, h, w, (False, False, False, False))]
    return [Tile(y, x, min(tile, h - y), min(tile, w - x), (y > 0, x > 0, y + tile < h, x + tile < w))
            for y in _tile_starts(h, tile, overlap) for x in _tile_starts(w, tile, overlap)]


class StreamingDecoder:
    """Decode a latent video that arrives chunk after chunk, with one causal cache across the chunks.

    The frames equal those of decoding the whole sequence at once (the decoder is causal and
    runs one latent frame at a time either way), and memory does not grow with the length.
    """

    def __init__(self, vae: WanVAE, normalized: bool = True):
        self.vae, self.normalized, self.cache = vae, normalized, CausalCache()

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, z, n, h, w], the next latent frames -> their frames [B, 3, frames, 8h, 8w] in [-1, 1]."""
        z = self.vae.denormalize(latents) if self.normalized else latents.float()
        x = self.vae.conv2(z.to(self.vae.dtype))
        return torch.cat([self.vae.decoder(x[:, :, i:i + 1], self.cache).float().clamp(-1, 1)
                          for i in range(x.shape[2])], dim=2)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering `size`, the last one flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return starts + [size - tile]


def _blend_ramp(h: int, w: int, ramp: int, scale: int, edges: tuple[bool, bool, bool, bool]) -> torch.Tensor:
    """Per-pixel weights rising linearly over `ramp` pixels on the edges shared with other tiles."""
    def axis(n: int, low: bool, high: bool) -> torch.Tensor:
        weights = torch.ones(n * scale)
        steps = torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)
        if low:
            weights[:ramp] = torch.minimum(weights[:ramp], steps)
        if high:
            weights[-ramp:] = torch.minimum(weights[-ramp:], steps.flip(0))
        return weights

    top, left, bottom, right = edges
    return (axis(h, top, bottom)[:, None] * axis(w, left, right)[None, :]).view(1, 1, 1, h * scale, w * scale)
