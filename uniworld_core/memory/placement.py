"""Placement: put a loaded DiT on a device under a memory budget, in one call.

    placed = place_dit(model, "cuda", budget_bytes=8 * 2**30, latent_grid=(13, 60, 104))
    placed.summary()   # "28/40 blocks resident, 12 swapped (...)"
    placed.stats       # block-swap traffic so far
    placed.remove()    # every block back on the device, hooks gone

The plan (planner.py) says how many blocks fit; the swapped ones stay in
(pinned) CPU RAM and visit the device just in time on a copy stream
(blockswap.py); embeddings, head and the FlashI2V modules go to the device.
Encoders and the VAE use `offload.Placement` (whole-model offload).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..parallel import is_fsdp
from .blockswap import BlockSwap, SwapStats
from .planner import MemoryPlan, plan_block_swap

AUTO = -1  # blocks_to_swap: planned from the budget


def free_memory(device: torch.device) -> int | None:
    """Free bytes on an accelerator (None on the CPU, where nothing needs swapping)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "npu" and hasattr(torch, "npu"):
        return int(torch.npu.mem_get_info(device)[0])
    return None


@dataclass
class DiTPlacement:
    """A placed DiT: the model, its memory plan and the block swap that keeps it within budget."""

    model: nn.Module
    device: torch.device
    plan: MemoryPlan | None
    swap: BlockSwap | None

    @property
    def stats(self) -> SwapStats:
        return self.swap.stats if self.swap is not None else SwapStats()

    @property
    def swapped(self) -> int:
        return len(self.swap.swapped) if self.swap is not None else 0

    def summary(self) -> str:
        if self.plan is None:
            return f"all {len(self.model.blocks)} blocks on {self.device}"
        return self.plan.summary()

    def remove(self) -> None:
        """End block swap: every block stays on the device from now on."""
        if self.swap is not None:
            self.swap.remove()
            self.swap = None


def place_dit(model: nn.Module, device: torch.device | str, budget_bytes: int | None = None,
              blocks_to_swap: int = AUTO, prefetch: int = 1,
              latent_grid: tuple[int, int, int] = (13, 60, 104), batch: int = 2) -> DiTPlacement:
    """Put `model` (loaded on the CPU) on `device`, swapping blocks when it would not fit.

    budget_bytes: the memory it may use (default: what the device has free; on
    the CPU nothing is planned). blocks_to_swap: AUTO plans from the budget for
    `latent_grid` (frames, height, width of the latents; the default is 832x480,
    49 frames); 0 keeps every block resident; N > 0 swaps the first N blocks.
    """
    device = torch.device(device)
    if is_fsdp(model):
        raise InputError("a DiT sharded across processes (FSDP)", "a whole DiT for placement and block swap",
                         "Under FSDP each process already holds only its shard; skip place_dit.")
    if blocks_to_swap < AUTO or prefetch < 0:
        raise InputError(f"blocks_to_swap {blocks_to_swap}, prefetch {prefetch}",
                         "blocks_to_swap -1 (planned), 0 or a block count, and prefetch >= 0")
    budget = free_memory(device) if budget_bytes is None else budget_bytes
    if blocks_to_swap == 0 or (budget is None and blocks_to_swap == AUTO):
        return DiTPlacement(model.to(device), device, None, None)
    override = None if blocks_to_swap == AUTO else blocks_to_swap
    plan = plan_block_swap(model, budget or 0, latent_grid, batch, prefetch, override)
    swap = BlockSwap(model.blocks, plan.swapped, device, prefetch) if plan.swapped else None
    if swap is None:
        model.blocks.to(device)
    for name, child in model.named_children():  # embeddings, head, FlashI2V modules
        if name != "blocks":
            child.to(device)
    return DiTPlacement(model, device, plan, swap)
