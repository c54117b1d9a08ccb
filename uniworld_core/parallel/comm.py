"""The collectives the parallel paths use, with the gradients training needs.

Only public `torch.distributed` calls that every supported release has
(torch >= 2.4) and that NCCL, HCCL and gloo all implement: `all_to_all_single`,
and `all_gather`. torch's own differentiable collectives moved
from `torch.distributed.nn.functional` (deprecated in 2.13) to the private
`_functional_collectives` (renamed between releases), so the two backward
rules the sequence-parallel DiT needs are written here on top of the public
calls: an all-to-all is its own inverse, and the gradient of a gather whose
result every rank uses is the sum of every rank's gradient for its slice.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """Chunk i of dim 0 goes to rank i; chunk i of the result came from rank i."""
    x = x.contiguous()  # first: empty_like keeps a permuted input's strides, the collective assumes none
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def _gather(x: torch.Tensor, group) -> torch.Tensor:
    """Every rank's `x` stacked along a new dim 0, in rank order."""
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x, group=group)
    return torch.stack(parts)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_to_all(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_to_all(grad, ctx.group), None


class _GatherForAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _gather(x, group)

    @staticmethod
    def backward(ctx, grad):
        # every rank's loss depends on every slice: this rank's slice gets the sum of their gradients
        # (a reduce-scatter, written as an all-to-all plus a sum because gloo has no reduce-scatter)
        return _all_to_all(grad, ctx.group).sum(0), None


def all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """Differentiable all-to-all over dim 0 of `x` (its size is the group's size)."""
    return _AllToAll.apply(x, group)


def gather_for_all(x: torch.Tensor, group) -> torch.Tensor:
    """Differentiable all-gather: [world, *x.shape] on every rank.

    Its gradient assumes what the DiT does with it: every rank computes the same
    loss from the gathered tensor, so each slice's gradient is summed over ranks.
    """
    return _GatherForAll.apply(x, group)


def gather(x: torch.Tensor, group) -> torch.Tensor:
    """Plain all-gather (no gradient): [world, *x.shape] on every rank."""
    return _gather(x, group)
