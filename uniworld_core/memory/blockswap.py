"""Block swap: DiT blocks that live in CPU RAM and visit the GPU just in time.

Each of the first `swapped` blocks is a `SwapUnit` (offload.py). Before a
swapped block runs its weights are on the device: the copy was started
`prefetch` blocks earlier on a separate stream, and the compute stream waits
on that copy's event; after the block runs its device copy is dropped. On
CUDA the store is pinned, so copies overlap compute; elsewhere the same logic
runs with ordinary copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .offload import SwapUnit


@dataclass
class SwapStats:
    loads: int = 0
    waited_loads: int = 0  # loads not prefetched: compute waited for the whole copy
    max_loaded: int = 0
    copy_bytes: int = 0


class BlockSwap:
    """Keeps `swapped` of `blocks` off the device except while they run."""

    def __init__(self, blocks: nn.ModuleList, swapped: int, device: torch.device | str, prefetch: int = 1):
        self.blocks, self.device, self.prefetch = blocks, torch.device(device), max(0, prefetch)
        self.swapped = list(range(min(max(swapped, 0), len(blocks))))
        self.copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.stats = SwapStats()
        self.units: dict[int, SwapUnit] = {}
        for index, block in enumerate(blocks):
            if index in self.swapped:
                self.units[index] = SwapUnit(block, self.device, self.copy_stream)
            else:
                block.to(self.device)
        self._handles = [blocks[i].register_forward_pre_hook(self._before(i)) for i in self.swapped]
        self._handles += [blocks[i].register_forward_hook(self._after(i)) for i in self.swapped]

    def remove(self) -> None:
        """Put every block back on the device for good and remove the hooks."""
        for handle in self._handles:
            handle.remove()
        for unit in self.units.values():
            unit.restore()
        self.units.clear()

    def _load(self, index: int) -> None:
        unit = self.units[index]
        if unit.load():
            self.stats.loads += 1
            self.stats.copy_bytes += unit.nbytes
            loaded = sum(u.loaded for u in self.units.values())
            self.stats.max_loaded = max(self.stats.max_loaded, loaded)

    def _next_swapped(self, index: int) -> list[int]:
        position = self.swapped.index(index)
        ahead = self.swapped[position + 1:position + 1 + self.prefetch]
        if len(ahead) < self.prefetch:  # wrap to the next forward (next sampling step)
            ahead += self.swapped[:self.prefetch - len(ahead)]
        return [i for i in ahead if i != index]

    def _before(self, index: int):
        def hook(module, args):
            if not self.units[index].loaded:
                self.stats.waited_loads += 1
                self._load(index)
            self.units[index].wait()
            for upcoming in self._next_swapped(index):
                self._load(upcoming)
        return hook

    def _after(self, index: int):
        def hook(module, args, output):
            self.units[index].drop()
        return hook


def block_bytes(block: nn.Module) -> int:
    """Bytes of a block's weights (its store when it is swapped out)."""
    return sum(p.numel() * p.element_size() for p in block.parameters())
