"""3-D rotary position embedding of the Wan DiT, in real arithmetic.

The head dimension d is split into pairs: d - 4*(d//6) channels rotate with
the frame index, 2*(d//6) with the row and 2*(d//6) with the column, each
part with its own frequency ladder theta^(-2i/part). The official code uses
complex float64 numbers; rotating (a, b) pairs by cos/sin tables computed in
float64 and applied in float32 gives the same numbers to float32 precision,
as a complex multiplication where complex ops are fast and in real
arithmetic where they do not exist (NPU).
"""

from __future__ import annotations

from functools import lru_cache

import torch

ROPE_THETA = 10000.0
ROPE_MAX_POSITIONS = 1024


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels given to (time, height, width)."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _angles(positions: int, part_dim: int) -> torch.Tensor:
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, part_dim, 2, dtype=torch.float64) / part_dim)
    return torch.outer(torch.arange(positions, dtype=torch.float64), inv_freq)


@lru_cache(maxsize=32)
def _tables_cpu(grid: tuple[int, int, int], head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    f, h, w = grid
    if max(grid) > ROPE_MAX_POSITIONS:
        raise ValueError(f"a latent grid of {grid} exceeds the {ROPE_MAX_POSITIONS} RoPE positions")
    parts = [_angles(n, d) for n, d in zip(grid, rope_split(head_dim))]
    angles = torch.cat([
        parts[0].view(f, 1, 1, -1).expand(f, h, w, -1),
        parts[1].view(1, h, 1, -1).expand(f, h, w, -1),
        parts[2].view(1, 1, w, -1).expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, head_dim // 2)
    # per channel: pair i's cos twice; -sin for its first channel, +sin for its second
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = torch.stack((-angles.sin(), angles.sin()), dim=-1).flatten(-2)
    return cos.float()[:, None, :], sin.float()[:, None, :]  # [L, 1 (heads), head_dim]


def rope_tables(grid: tuple[int, int, int], head_dim: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables [L, 1, head_dim] for a (frames, rows, cols) token grid."""
    cos, sin = _tables_cpu(tuple(int(g) for g in grid), head_dim)
    return cos.to(device), sin.to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (a, b) of x [B, L, heads, head_dim] to (a cos - b sin, a sin + b cos), in float32.

    On the CPU and CUDA, eagerly, as one complex multiplication (a vectorised
    kernel, ~9x faster on the CPU than the real form); elsewhere (Ascend NPUs
    lack complex ops, MPS) and inside torch.compile, which fuses the real
    form, as x * cos + swap(x) * sin with the tables of `rope_tables`.
    """
    x = x.float()
    if x.device.type in ("cpu", "cuda") and not torch.compiler.is_compiling():
        rotation = torch.complex(cos[..., 0::2], sin[..., 1::2])  # e^{i angle} per pair, [L, 1, head_dim/2]
        return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * rotation).flatten(-2)
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (b, a) for each pair (a, b)
    return torch.addcmul(x * cos, swapped, sin)
