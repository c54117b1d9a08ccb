"""Sequence parallelism of the DiT: each process holds a share of the video tokens.

The DiT calls this module's hook (`WanDiT.sequence_parallel`) twice per forward:
`split` after the patch embedding and `gather` after the head. Everything in
between is per token (modulation, norms, FFN, cross-attention to the whole
context, the head) except self-attention, which needs every token:

* **Ulysses** (heads divisible by the group size S): an all-to-all trades the
  token split for a head split, so each process holds all tokens of H/S heads,
  runs the ordinary attention kernel, and a second all-to-all trades back.
  Bytes per process and layer: 4 * (S-1)/S * (L/S) * dim (q, k, v, output).
* **Gathered K/V** (any head count): every process gathers the keys and values
  of all tokens and attends from its own queries. The bytes of ring attention
  (2 * (S-1)/S * L * dim per layer) without its overlap; the fallback when the
  heads do not divide (the 1.3B's 12 heads on 8 processes).

Uneven splits: the L tokens are padded to S * ceil(L/S); padding never enters
attention (it is cut off before the kernel runs: Ulysses sees all L real
tokens, the gathered keys are cut to L) and `gather` drops it. RoPE tables are
split with the tokens, so every token keeps the angle of its position in the
whole video.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .comm import all_to_all, gather_for_all

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def share_of(length: int, size: int) -> int:
    """Tokens per process when `length` tokens are split over `size` processes (the last ones padded)."""
    return -(-length // size)


def _pad_rows(table: torch.Tensor, rows: int, value: float) -> torch.Tensor:
    """`table` with `rows` more rows of `value` along dim 0 (whatever its other dims)."""
    return torch.cat((table, table.new_full((rows, *table.shape[1:]), value))) if rows else table


class UlyssesAttention:
    """Self-attention over all tokens for a share of the heads; q, k, v, output as token shares."""

    def __init__(self, inner: AttentionFn, group, length: int):
        self.inner, self.group, self.length = inner, group, length
        self.size = dist.get_world_size(group)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        size, share, heads = self.size, q.shape[1], q.shape[2]
        # [3, B, share, H, D] -> [S, 3, B, share, H/S, D]: head group j goes to process j
        qkv = torch.stack((q, k, v)).unflatten(3, (size, heads // size)).permute(3, 0, 1, 2, 4, 5)
        qkv = all_to_all(qkv, self.group)  # chunk i: process i's tokens, this process's heads
        qkv = qkv.permute(1, 2, 0, 3, 4, 5).flatten(2, 3)[:, :, :self.length]  # [3, B, L, H/S, D]
        out = self.inner(qkv[0], qkv[1], qkv[2])  # [B, L, H/S, D]
        out = F.pad(out, (0, 0, 0, 0, 0, size * share - self.length))
        out = all_to_all(out.unflatten(1, (size, share)).transpose(0, 1), self.group)  # chunk i: head group i
        return out.permute(1, 2, 0, 3, 4).flatten(2, 3)  # [B, share, H, D]


class GatheredKVAttention:
    """Self-attention from this process's queries to the keys and values of every token."""

    def __init__(self, inner: AttentionFn, group, length: int):
        self.inner, self.group, self.length = inner, group, length

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        kv = gather_for_all(torch.stack((k, v)), self.group)  # [S, 2, B, share, H, D]
        kv = kv.permute(1, 2, 0, 3, 4, 5).flatten(2, 3)[:, :, :self.length]  # [2, B, L, H, D]
        return self.inner(q, kv[0], kv[1])


class SequenceParallel:
    """The DiT's hook: split tokens (and their RoPE angles) over a process group, gather the output."""

    def __init__(self, group, num_heads: int, mode: str = "auto"):
        self.group = group
        self.size, self.rank = dist.get_world_size(group), dist.get_rank(group)
        if mode == "auto":
            mode = "ulysses" if num_heads % self.size == 0 else "kv_gather"
        if mode == "ulysses" and num_heads % self.size:
            raise ValueError(f"Ulysses needs the {num_heads} heads to divide by the {self.size} processes")
        if mode not in ("ulysses", "kv_gather"):
            raise ValueError(f"unknown sequence-parallel attention {mode!r}: ulysses or kv_gather")
        self.mode = mode

    def split(self, tokens: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
              attention: AttentionFn) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], AttentionFn]:
        """This process's tokens [B, share, dim], their RoPE tables and the self-attention to use."""
        length = tokens.shape[1]
        share = share_of(length, self.size)
        pad, mine = share * self.size - length, slice(self.rank * share, (self.rank + 1) * share)
        cos, sin = rope  # tables with the tokens along dim 0; padding rotates by 0 (cos 1, sin 0), never used
        rope = _pad_rows(cos, pad, 1.0)[mine], _pad_rows(sin, pad, 0.0)[mine]
        kind = UlyssesAttention if self.mode == "ulysses" else GatheredKVAttention
        return F.pad(tokens, (0, 0, 0, pad))[:, mine], rope, kind(attention, self.group, length)

    def share(self, per_token: torch.Tensor) -> torch.Tensor:
        """This process's rows of a per-token tensor [B, L, ...] (the time terms of a continuation)."""
        length = per_token.shape[1]
        share = share_of(length, self.size)
        pad = [0, 0] * (per_token.ndim - 2) + [0, share * self.size - length]
        return F.pad(per_token, pad)[:, self.rank * share:(self.rank + 1) * share]

    def gather(self, out: torch.Tensor, length: int) -> torch.Tensor:
        """Every process's share of the head output [B, share, C] -> all `length` tokens [B, L, C]."""
        return gather_for_all(out, self.group).transpose(0, 1).flatten(1, 2)[:, :length]
