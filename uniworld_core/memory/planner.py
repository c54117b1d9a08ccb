"""VRAM planner: how many DiT blocks can stay on the device for a given video size.

Weights: measured from the loaded model (GGUF and fp8 layers count their
stored bytes). Activations: the residual stream in float32, the modulated
block input, q/k/v and attention output, and the FFN hidden layer, for the
cond+uncond batch, plus a 10% margin. Swapped blocks also need room for the
block being computed and the ones being prefetched.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..model.config import DiTConfig, VAEConfig
from .blockswap import block_bytes

GIB = 2**30


def activation_bytes(cfg: DiTConfig, latent_grid: tuple[int, int, int], batch: int = 2,
                     compute_bytes: int = 2) -> int:
    """Peak activation memory of one DiT forward at a latent grid (frames, height, width)."""
    frames, height, width = latent_grid
    pt, ph, pw = cfg.patch_size
    tokens = (frames // pt) * (height // ph) * (width // pw)
    residual = 3 * tokens * cfg.dim * 4  # x, its norm, the modulated input (float32)
    attention = 4 * tokens * cfg.dim * compute_bytes  # q, k, v, output
    ffn = tokens * cfg.ffn_dim * compute_bytes * 2  # hidden layer and its activation
    return batch * (residual + max(attention, ffn))


def least_generation_bytes(cfg: DiTConfig, vae_cfg: VAEConfig, latent_grid: tuple[int, int, int],
                           batch: int = 2, compute_bytes: int = 4, shares: int = 1) -> int:
    """A lower bound on the memory one generation needs beyond the weights.

    The DiT's activations for one forward (cond+uncond batch) and one tensor of
    the VAE decoder at full resolution (its widest stage, 4 frames and the 2
    cached ones). Used to refuse an impossible size before allocating anything,
    so it errs low: a real run needs more. `shares`: processes that split the
    tokens (sequence parallel), each holding 1/shares of the activations.
    """
    frames, height, width = latent_grid
    pixels = height * vae_cfg.spatial_factor * width * vae_cfg.spatial_factor
    decoder = vae_cfg.base_dim * vae_cfg.dim_mult[0] * (vae_cfg.temporal_factor + 2) * pixels * compute_bytes
    return activation_bytes(cfg, latent_grid, batch, compute_bytes) // shares + decoder


@dataclass
class MemoryPlan:
    free_bytes: int
    other_weights: int  # embeddings, head, FlashI2V modules
    per_block: int
    activations: int
    blocks: int
    swapped: int
    prefetch: int

    @property
    def resident(self) -> int:
        return self.blocks - self.swapped

    @property
    def needed_bytes(self) -> int:
        return (self.other_weights + self.resident * self.per_block + self.activations
                + min(self.swapped, 1 + self.prefetch) * self.per_block)

    def summary(self) -> str:
        return (f"{self.resident}/{self.blocks} blocks resident, {self.swapped} swapped "
                f"(block {self.per_block / GIB:.2f} GiB, other weights {self.other_weights / GIB:.2f} GiB, "
                f"activations {self.activations / GIB:.2f} GiB; needs {self.needed_bytes / GIB:.1f} of "
                f"{self.free_bytes / GIB:.1f} GiB free)")


def plan_block_swap(model: nn.Module, free_bytes: int, latent_grid: tuple[int, int, int],
                    batch: int = 2, prefetch: int = 1, override: int | None = None,
                    margin: float = 0.9) -> MemoryPlan:
    """Choose how many blocks to swap so that weights + activations fit in `free_bytes`."""
    blocks = len(model.blocks)
    per_block = max(block_bytes(b) for b in model.blocks)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    other = total - sum(block_bytes(b) for b in model.blocks)
    compute_bytes = 2 if any(p.element_size() == 2 for p in model.parameters()) else 4
    activations = int(activation_bytes(model.cfg, latent_grid, batch, compute_bytes) * 1.1)
    if override is not None and override >= 0:
        swapped = min(override, blocks)
    else:
        budget = free_bytes * margin - other - activations - (1 + prefetch) * per_block
        swapped = blocks - max(0, min(blocks, int(budget // per_block)))
        if swapped == 0 or blocks * per_block + other + activations <= free_bytes * margin:
            swapped = 0
    return MemoryPlan(free_bytes, other, per_block, activations, blocks, swapped, prefetch)
