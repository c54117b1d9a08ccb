"""FSDP: the DiT's parameters split across processes (accelerate's FSDP plugin, FSDP2).

Under `accelerate launch --config_file training/accelerate/fsdp.yaml` the
trainer hands the DiT to accelerate's FSDP2 preparation, which shards every
WanBlock and the rest of the model with `fully_shard`: each parameter becomes a DTensor
holding this process's slice. The helpers here turn those slices into whole
tensors for files (a collective: every process must call them) and back.
Parameters outside the DiT (adapter, LoRA factors) stay whole on every
process and are averaged like under DDP.
"""

from __future__ import annotations

import torch
from torch import nn


def is_sharded(accelerator) -> bool:
    """True when accelerate runs with its FSDP plugin."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def _dtensor():
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def is_shard(t: torch.Tensor | None) -> bool:
    DTensor = _dtensor()
    return DTensor is not None and isinstance(t, DTensor)


def whole(t: torch.Tensor) -> torch.Tensor:
    """The full tensor behind a shard (gathered from every process), or `t` itself."""
    return t.full_tensor() if is_shard(t) else t


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This process's slice of `full`, laid out as the shard `like` (or `full` when `like` is whole)."""
    if not is_shard(like):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(like.dtype), like.device_mesh, like.placements)


def shard_model(accelerator, dit: nn.Module) -> nn.Module:
    """Split the DiT with accelerate's FSDP2 plugin settings, before the optimizer is built.

    Sharding first lets the trainable set live inside the DiT (full, FlashI2V modules: shards) or
    outside it (adapter, LoRA factors: whole tensors) with one code path. `project_start` is called
    outside `forward` by the objective and sampler, so it goes through FSDP's hooks as well.
    """
    from accelerate.utils import fsdp2_prepare_model
    from torch.distributed.fsdp import register_fsdp_forward_method

    dit = fsdp2_prepare_model(accelerator, dit)
    register_fsdp_forward_method(dit, "project_start")
    return dit


def local_optimizer_state(state: dict) -> dict:
    """An optimizer state dict with shards replaced by this process's local tensors (for torch.save)."""
    return {**state, "state": {index: {k: v.to_local() if is_shard(v) else v for k, v in values.items()}
                               for index, values in state["state"].items()}}


def restore_optimizer_state(state: dict, params: list[torch.Tensor]) -> dict:
    """The inverse of `local_optimizer_state` for the optimizer over `params` (same process count)."""
    from torch.distributed.tensor import DTensor

    restored = {}
    for index, values in state["state"].items():
        p = params[int(index)]
        restored[index] = {k: DTensor.from_local(v, p.device_mesh, p.placements, run_check=False,
                                                 shape=p.shape, stride=p.stride())
                           if is_shard(p) and torch.is_tensor(v) and v.ndim else v for k, v in values.items()}
    return {**state, "state": restored}
