"""The two modules FlashI2V adds to the Wan DiT (arXiv 2509.25187).

* `LearnableProj` maps the first-frame latent into the flow's source space;
  the DiT then sees `x - proj(z_img)` (latent shifting) instead of the
  conditioning image itself.
* `fourier_embedding` embeds the first frame's high-frequency magnitude
  (see `fourier.py`) and is added to the patch embedding.

Both are zero-initialised at their output, so a FlashI2V model initialised
from a T2V checkpoint starts out as exactly that T2V model.
"""

from __future__ import annotations

import torch
from torch import nn


class LearnableProj(nn.Module):
    """Conv3d(C -> 4C) -> SiLU -> Conv3d(4C -> C), kernel (kt, 3, 3), shape-preserving."""

    def __init__(self, channels: int = 16, kernel_t: int = 1):
        super().__init__()
        if kernel_t not in (1, 3):
            raise ValueError(f"learnable_proj temporal kernel must be 1 or 3, got {kernel_t}")
        kernel, pad = (kernel_t, 3, 3), (kernel_t // 2, 1, 1)
        self.proj = nn.Sequential(
            nn.Conv3d(channels, 4 * channels, kernel, padding=pad),
            nn.SiLU(),
            nn.Conv3d(4 * channels, channels, kernel, padding=pad),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.proj[0].weight.flatten(1))
        nn.init.zeros_(self.proj[0].bias)
        nn.init.zeros_(self.proj[2].weight)
        nn.init.zeros_(self.proj[2].bias)

    def forward(self, start_frame_latents: torch.Tensor) -> torch.Tensor:
        """[B, C, 1, H, W] first-frame latent -> [B, C, 1, H, W] shift, in float32."""
        weight = self.proj[0].weight
        return self.proj(start_frame_latents.to(weight.dtype)).float()


def fourier_embedding(in_dim: int, dim: int, patch_size: tuple[int, int, int]) -> nn.Sequential:
    """Patchify the Fourier features like the latents, then a 1x1x1 mixing conv."""
    embed = nn.Sequential(
        nn.Conv3d(in_dim, dim, kernel_size=patch_size, stride=patch_size),
        nn.Conv3d(dim, dim, kernel_size=1),
    )
    reset_fourier_embedding(embed)
    return embed


def reset_fourier_embedding(embed: nn.Sequential) -> None:
    """Xavier input conv, zero output conv: the embedding starts out adding nothing."""
    nn.init.xavier_uniform_(embed[0].weight.flatten(1))
    nn.init.zeros_(embed[0].bias)
    nn.init.zeros_(embed[1].weight)
    nn.init.zeros_(embed[1].bias)


def shift_latents(latents: torch.Tensor, start_frame_proj: torch.Tensor) -> torch.Tensor:
    """Latent shifting: what the DiT sees, `x - proj(z_img)` broadcast over frames, in fp32."""
    return latents.float() - start_frame_proj.float()
