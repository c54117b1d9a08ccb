"""A DiT run by the processes of a `Parallel` layout: its tokens split (sequence) and its guidance split (CFG)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .comm import gather
from .groups import Parallel
from .sequence import SequenceParallel


def install_sequence_parallel(dit: nn.Module, parallel: Parallel | None, mode: str = "auto") -> None:
    """Make `dit` split its tokens over the sequence group of `parallel` from now on (no-op for size 1)."""
    if parallel is None or parallel.sequence == 1:
        dit.sequence_parallel = None
        return
    dit.sequence_parallel = SequenceParallel(parallel.sequence_group, dit.cfg.num_heads, mode)


@contextmanager
def sequence_parallel(dit: nn.Module, parallel: Parallel | None):
    """`dit` splits its tokens over the sequence group inside the block; as it was afterwards."""
    before = dit.sequence_parallel
    if parallel is not None and parallel.sequence > 1 and before is None:
        install_sequence_parallel(dit, parallel)
    try:
        yield dit
    finally:
        dit.sequence_parallel = before


def cfg_parallel_velocity(dit: nn.Module, parallel: Parallel, x: torch.Tensor, t: torch.Tensor,
                          context: torch.Tensor, negative: torch.Tensor, features: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) velocities: CFG row 0 computes the conditional branch, row 1 the unconditional."""
    mine = context if parallel.cfg_rank == 0 else negative
    both = gather(dit(x, t, mine, features).float(), parallel.cfg_group)
    return both[0], both[1]
