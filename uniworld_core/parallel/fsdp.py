"""DiT weights sharded across processes for inference (FSDP2, `fully_shard`).

Each WanBlock is its own FSDP unit, the embeddings, head and FlashI2V modules
form the root unit: a process stores 1/W of every weight and all-gathers one
block just before it runs (freed again after it), so a DiT larger than one
device's memory runs on several. Compute is unchanged: every process runs the
whole model on its own tokens (sequence parallel) or branch (CFG parallel).

Weights in GGUF blocks or fp8 stay compressed while sharded (their bytes are
split and gathered like any other tensor) and are dequantised per call as on
one device. Block swap does not combine with it: both decide where a block's
weights live between uses, and under FSDP each process already keeps only
its shard.
"""

from __future__ import annotations

from torch import nn

from ..errors import InputError
from .groups import Parallel


def is_fsdp(model: nn.Module) -> bool:
    """True when `model` was sharded by `fully_shard` (FSDP2)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _check_unswapped(dit: nn.Module) -> None:
    # block swap leaves empty placeholders in the blocks it keeps in CPU RAM (memory.offload.SwapUnit)
    swapped = [i for i, block in enumerate(dit.blocks) if any(p.numel() == 0 for p in block.parameters())]
    if swapped:
        raise InputError(f"a DiT whose blocks {swapped[:4]}... are block-swapped", "a DiT without block swap for "
                         "FSDP sharding (each process keeps only its shard of every block)",
                         "Remove the placement (placed.remove()) or shard without --blocks-to-swap/--vram-budget.")


def shard_dit(dit: nn.Module, parallel: Parallel) -> nn.Module:
    """Shard `dit` (on the CPU or this process's device) across every process of `parallel`; returns it.

    Collective: every process calls it with the same model. The weights end on `parallel.device`.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    if is_fsdp(dit):
        return dit
    _check_unswapped(dit)
    for p in dit.parameters():  # inference: no gradients, and mixed storage dtypes shard as bytes
        p.requires_grad_(False)
    mesh = parallel.world_mesh()
    for block in dit.blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=True)
    # the root unit too: gathering its ~0.4 B parameters (14B) per call costs little next to 40 blocks
    fully_shard(dit, mesh=mesh, reshard_after_forward=True)
    # the sampler calls project_start (latent shifting) outside forward: it must gather the root unit too
    register_fsdp_forward_method(dit, "project_start")
    return dit
