"""Long videos: the first I2SV run, then continuations, each `new_frames` latent frames at a time.

Continuation (as the Uniworld-OSP2.0 report plans it): the last `context_frames` latent
frames of the video so far are clean context, concatenated in time before the noise; the
DiT sees them at timestep 0 and samples only the new frames. Every chunk keeps the start
frame's conditioning (the latent shift by proj(z_img) and its Fourier features) and the
prompt; the context window carries what the video has become. With `match` (the default) each
chunk's latents are shifted and scaled per channel to the mean and spread of the context window it
continues, and its decoded frames are shifted to the first run's mean colour: the miniature's
continuations otherwise drift in colour and contrast from chunk to chunk (docs/long_video.md). It pins
the video's global colour, so turn it off for weights whose videos should change lighting over time.
Each continuation's first `crossfade` frames are blended from the frame before it (`JoinSmoother`):
the joins otherwise jump 2.7x as much as the frames inside a chunk. The latents form one causal
sequence, decoded chunk by chunk with one cache (`model.vae.StreamingDecoder`), so memory
and time per chunk do not grow with the length. This needs weights trained for it.

Fallback for weights that were not (`fallback=True`, today's official files): chained I2SV.
Each chunk is a new I2SV run from the last frame of the previous one (that frame is decoded
once for the output anyway and encoded once as the next start image; no frame is re-encoded
through a VAE round trip), its colours matched to the previous chunk's last frame, and the
join cross-faded over a few frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from ..errors import InputError
from ..model.dit import WanDiT
from ..model.vae import StreamingDecoder, WanVAE
from ..progress import ProgressHook
from .cache import CacheStats
from .pipeline import StartFrame, VideoSettings, encode_start, generate_latents, initial_noise, latent_shape
from .sampler import SamplerSettings, sample


@dataclass(frozen=True)
class ContinuationSettings:
    """How a long video is cut into runs."""

    new_frames: int = 9  # latent frames each continuation adds (36 video frames)
    context_frames: int = 4  # latent frames of the video so far that each continuation sees
    first_frames: int = 49  # video frames of the first (I2SV) run
    fallback: bool = False  # chained I2SV from the last frame, for weights without continuation training
    crossfade: int = 2  # frames over which a join is blended
    match: bool = True  # match each chunk's colour statistics to what it continues (see the module docstring)

    def __post_init__(self):
        if self.new_frames < 1 or self.context_frames < 1 or self.first_frames < 5 or (self.first_frames - 1) % 4:
            raise InputError(f"continuation settings {self}", "new_frames >= 1, context_frames >= 1 and "
                             "first_frames of the form 4k+1 (at least 5)")


def continue_latents(dit: WanDiT, start: StartFrame, video: torch.Tensor, context: torch.Tensor,
                     negative: torch.Tensor | None, sampler: SamplerSettings, new_frames: int,
                     context_frames: int, seed: int, progress: ProgressHook | None = None,
                     stats: CacheStats | None = None) -> torch.Tensor:
    """`new_frames` latent frames that continue `video` [1, z, T, h, w] (normalised latents)."""
    device, dtype = dit.patch_embedding.weight.device, dit.patch_embedding.weight.dtype
    window = video[:, :, -context_frames:].to(device)
    shape = (video.shape[0], video.shape[1], new_frames, *video.shape[3:])
    return sample(dit, initial_noise(shape, seed, device), start.latents.to(device), context.to(device, dtype),
                  None if negative is None else negative.to(device, dtype), sampler, progress=progress,
                  high_frequencies=start.high_frequencies.to(device), stats=stats, prefix=window)


def match_statistics(new: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """New latent frames [B, z, T, h, w] shifted and scaled per channel to the mean and spread of the
    context `window` [B, z, K, h, w] they continue."""
    dims = (2, 3, 4)
    spread = window.std(dim=dims, keepdim=True) / new.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return (new - new.mean(dim=dims, keepdim=True)) * spread + window.mean(dim=dims, keepdim=True)


def _continued(dit, start, video, context, negative, sampler, new_frames, settings, seed, progress, stats=None):
    """`continue_latents`, then (with `settings.match`) matched to the context window's statistics."""
    new = continue_latents(dit, start, video, context, negative, sampler, new_frames, settings.context_frames, seed,
                           progress, stats)
    window = video[:, :, -settings.context_frames:].to(new.device)
    return match_statistics(new, window.to(new.dtype)) if settings.match else new


def chunk_sizes(total_frames: int, settings: ContinuationSettings) -> list[int]:
    """Latent frames of each run: the first I2SV run, then continuations (the last one may be shorter)."""
    if total_frames < 5 or (total_frames - 1) % 4:
        raise InputError(f"{total_frames} frames", "a frame count of the form 4k+1, at least 5")
    total = 1 + (total_frames - 1) // 4
    first = min(total, 1 + (settings.first_frames - 1) // 4)
    sizes, left = [first], total - first
    while left > 0:
        sizes.append(min(settings.new_frames, left))
        left -= sizes[-1]
    return sizes


def generate_long(dit: WanDiT, vae: WanVAE, start: StartFrame, context: torch.Tensor,
                  negative: torch.Tensor | None, video: VideoSettings, sampler: SamplerSettings,
                  settings: ContinuationSettings = ContinuationSettings(),
                  progress: ProgressHook | None = None,
                  stats: CacheStats | None = None) -> Iterator[torch.Tensor]:
    """Yield the video's frames [T, H, W, 3] in 0..1 chunk by chunk as each run finishes.

    `stats` adds up what the sampling cache saved over every run.

    The VAE must be on the DiT's device for the whole call (it decodes each chunk, and in the
    fallback also encodes each chunk's start frame).
    """
    sizes = chunk_sizes(video.num_frames, settings)
    first = replace(video, num_frames=1 + 4 * (sizes[0] - 1))
    latents = generate_latents(dit, vae, None, context, negative, first, sampler, progress, start=start, stats=stats)
    if settings.fallback:
        yield from _chained(dit, vae, start, context, negative, video, sampler, settings, sizes, latents, progress,
                            stats)
        return
    decoder, smoother = StreamingDecoder(vae), JoinSmoother(settings.crossfade)
    yield smoother(_frames(decoder(latents)), settings.match)
    window = latents
    for index, size in enumerate(sizes[1:], start=1):
        new = _continued(dit, start, window, context, negative, sampler, size, settings, video.seed + index,
                         progress, stats)
        yield smoother(_frames(decoder(new)), settings.match)
        window = torch.cat([window, new], dim=2)[:, :, -settings.context_frames:]  # bounded: same cost per chunk


class JoinSmoother:
    """The decoded chunks of a continued video, one after another: each later chunk shifted to the first
    chunk's mean colour (with `match`) and its first `fade` frames blended from the previous chunk's last
    frame, so that neither the colour nor the joins drift (continuation mode; the fallback has `join`).

    Shifting in pixels, after matching the latents: the decoder turns equal latent statistics into
    colours that still wander (background drift 7/255 after 4 chunks of the miniature, 1.4 with this).
    """

    def __init__(self, fade: int):
        self.fade = fade
        self.anchor: torch.Tensor | None = None  # the first chunk's mean colour [3]
        self.last: torch.Tensor | None = None

    def __call__(self, frames: torch.Tensor, match: bool = True) -> torch.Tensor:
        """The chunk's frames [T, H, W, 3] in 0..1, smoothed against the chunks before it."""
        if self.anchor is None:
            self.anchor = frames.mean(dim=(0, 1, 2))
        else:
            if match:
                frames = (frames - frames.mean(dim=(0, 1, 2)) + self.anchor).clamp(0, 1)
            frames = crossfade(self.last, frames, self.fade)
        self.last = frames[-1]
        return frames


def smooth_joins(frames: torch.Tensor, starts: list[tuple[int, bool]],
                 fade: int = ContinuationSettings.crossfade) -> torch.Tensor:
    """`JoinSmoother` over a decoded video [T, H, W, 3] whose continuations begin at the given
    (frame index, match) pairs (see `frame_index`)."""
    smoother, bounds = JoinSmoother(fade), [0, *(at for at, _ in starts), len(frames)]
    matches = [True, *(match for _, match in starts)]
    return torch.cat([smoother(frames[a:b], match) for a, b, match in zip(bounds, bounds[1:], matches)])


def frame_index(latent_index: int, chunks: list[int]) -> int:
    """The first frame that latent frame `latent_index` decodes to in `decode_chunked`'s output of runs
    `chunks` (not a run's first latent frame: that one is the start frame)."""
    offset = done = 0
    for run, size in enumerate(chunks):
        first = 1 if run == 0 else 0  # later runs' start frame repeats the previous last frame: dropped
        if offset < latent_index < offset + size:
            return done + first + 4 * (latent_index - offset - 1)
        done, offset = done + first + 4 * (size - 1), offset + size
    raise InputError(f"latent frame {latent_index} as a join in runs of {chunks} latent frames",
                     "a latent frame inside a run, after its first")


def _frames(video: torch.Tensor) -> torch.Tensor:
    return ((video[0].permute(1, 2, 3, 0).float() + 1) / 2).clamp(0, 1).cpu()


def _chained(dit, vae, start, context, negative, video, sampler, settings, sizes, latents, progress, stats=None):
    """The fallback: each chunk a new I2SV run from the previous chunk's last frame."""
    previous = _frames(vae.decode(latents))
    yield previous
    for index, size in enumerate(sizes[1:], start=1):
        new = _restarted_run(dit, vae, previous[-1], start, context, negative, video, sampler, size, index, progress,
                             stats)
        previous = join(previous[-1], _frames(vae.decode(new)), settings.crossfade, settings.match)
        yield previous


def _restarted_run(dit, vae, last_frame, start, context, negative, video, sampler, size, index, progress,
                   stats=None):
    """An I2SV run of `size` new latent frames (plus frame 0, the last frame again) from `last_frame`."""
    run = replace(video, num_frames=1 + 4 * size, seed=video.seed + index)
    restart = encode_start(vae, last_frame, video.width, video.height, start.fourier_ratio)
    return generate_latents(dit, vae, None, context, negative, run, sampler, progress, start=restart, stats=stats)


def join(last: torch.Tensor, frames: torch.Tensor, fade: int, match: bool = True) -> torch.Tensor:
    """A chained run's frames after the previous chunk's `last` frame: its frame 0 (a copy of `last`)
    dropped, its colours matched to `last`, and the join cross-faded over `fade` frames."""
    return crossfade(last, match_colours(frames[1:], last) if match else frames[1:], fade)


def extend_latents(dit: WanDiT, vae: WanVAE, latents: torch.Tensor, chunks: list[int], start: StartFrame,
                   context: torch.Tensor, negative: torch.Tensor | None, sampler: SamplerSettings,
                   settings: ContinuationSettings, add: int, seed: int,
                   progress: ProgressHook | None = None) -> tuple[torch.Tensor, list[int]]:
    """`add` more latent frames after `latents` [1, z, T, h, w] (normalised): (latents, chunks).

    `chunks` are the latent frames of each separately decoded run (their sum is T): continuation
    extends the last run's causal sequence; the fallback appends a new run (add + 1 latent frames,
    whose first decoded frame repeats the previous last frame: `decode_chunked` drops it).
    """
    if not settings.fallback:
        new = _continued(dit, start, latents, context, negative, sampler, add, settings, seed, progress)
        return torch.cat([latents, new.to(latents.device)], dim=2), [*chunks[:-1], chunks[-1] + add]
    last_frame = _frames(vae.decode(latents[:, :, -chunks[-1]:]))[-1]
    height, width = latents.shape[3] * vae.cfg.spatial_factor, latents.shape[4] * vae.cfg.spatial_factor
    video = VideoSettings(width=width, height=height, seed=seed)
    new = _restarted_run(dit, vae, last_frame, start, context, negative, video, sampler, add, 0, progress)
    return torch.cat([latents, new.to(latents.device)], dim=2), [*chunks, add + 1]


def decode_chunked(vae: WanVAE, latents: torch.Tensor, chunks: list[int], fade: int = 2) -> torch.Tensor:
    """Frames [T, H, W, 3] in 0..1 of latents made of separately decoded runs (see `extend_latents`)."""
    if sum(chunks) != latents.shape[2]:
        raise InputError(f"runs of {chunks} latent frames for {latents.shape[2]} latent frames", "runs that add up")
    out, offset = [], 0
    for size in chunks:
        frames = _frames(vae.decode(latents[:, :, offset:offset + size]))
        out.append(frames if not out else join(out[-1][-1], frames, fade))
        offset += size
    return torch.cat(out)


def match_colours(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Shift and scale each colour channel of `frames` [T, H, W, 3] so its first frame has the reference's
    mean and spread: a chained chunk keeps the colours of the frame it continues."""
    mean, std = frames[0].mean(dim=(0, 1)), frames[0].std(dim=(0, 1)).clamp_min(1e-4)
    target_mean, target_std = reference.mean(dim=(0, 1)), reference.std(dim=(0, 1))
    return ((frames - mean) * (target_std / std) + target_mean).clamp(0, 1)


def crossfade(last: torch.Tensor, frames: torch.Tensor, count: int) -> torch.Tensor:
    """Blend the first `count` frames from the previous chunk's last frame into the new chunk."""
    out = frames.clone()
    for i in range(min(count, len(frames))):
        weight = (i + 1) / (count + 1)
        out[i] = (1 - weight) * last + weight * frames[i]
    return out


def check_long(video: VideoSettings, vae: WanVAE, settings: ContinuationSettings) -> list[int]:
    """The run sizes, after checking that each run's geometry is possible."""
    latent_shape(replace(video, num_frames=5), vae)
    return chunk_sizes(video.num_frames, settings)
