"""The VAE decode split across processes: spatial tiles, assembled on the main process.

Each tile of `WanVAE.decode_tiled` is decoded on its own (its causal cache
runs over the tile's whole clip), so process k can decode tiles k, k+W,
k+2W, ... and the main process blends them exactly as one process would.

Not time chunks: the causal cache carries every convolution's last two input
frames from one latent frame to the next, so frame i depends on every frame
before it through the stacked convolutions; a process starting mid-clip
would decode something else.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..media import video_to_frames
from ..model.vae import plan_tiles
from ..progress import ProgressHook
from .groups import Parallel


@torch.no_grad()
def decode_tiled(vae: nn.Module, latents: torch.Tensor, parallel: Parallel, tile: int = 32, overlap: int = 8,
                 normalized: bool = True, clamp: bool = True) -> torch.Tensor | None:
    """`vae.decode_tiled` with the tiles shared among the processes: the video on the main process, else None.

    Collective: every process calls it with the same latents.
    """
    tiles = plan_tiles(latents.shape[3], latents.shape[4], tile, overlap)
    if len(tiles) == 1:  # nothing to share
        return vae.decode(latents, normalized, clamp) if parallel.is_main else None
    owner = [i % parallel.world for i in range(len(tiles))]
    mine = {i: vae.decode(one.crop(latents), normalized, clamp=False)
            for i, one in enumerate(tiles) if owner[i] == parallel.rank}
    if not parallel.is_main:
        for i in sorted(mine):  # in tile order, the order the main process receives them
            dist.send(mine[i].contiguous(), dst=0)
        return None
    b, t = latents.shape[0], 1 + (latents.shape[2] - 1) * vae.cfg.temporal_factor
    scale = vae.cfg.spatial_factor

    def arriving():
        for i, one in enumerate(tiles):
            if owner[i] == 0:
                yield mine.pop(i)
                continue
            pixels = torch.empty(b, 3, t, one.height * scale, one.width * scale, device=latents.device)
            dist.recv(pixels, src=owner[i])
            yield pixels

    return vae.blend_tiles(latents, tiles, arriving(), overlap, clamp)


def decode_frames(vae: nn.Module, latents: torch.Tensor, parallel: Parallel | None, tile: int = 0,
                  overlap: int = 8, progress: ProgressHook | None = None) -> torch.Tensor | None:
    """Frames [T, H, W, 3] in 0..1 on the main process (None on the others): whole frames decoded by the main
    process alone, or `tile` x `tile` latent tiles shared by all (`tile` 0: whole frames). Without `parallel`,
    the one process decodes (tiled when asked).
    """
    if parallel is not None and tile:
        video = decode_tiled(vae, latents, parallel, tile, overlap)
    elif parallel is not None and not parallel.is_main:
        return None
    else:
        video = vae.decode_tiled(latents, tile, overlap, progress=progress) if tile else vae.decode(
            latents, progress=progress)
    return None if video is None else video_to_frames(video)
