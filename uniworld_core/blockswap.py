"""Block swap: DiT blocks that live in (pinned) CPU memory and visit the GPU just in time.

The first `swapped` blocks keep their weights in a store; between uses their
parameters hold an empty placeholder (so an un-loaded block can never run by
mistake). Before a swapped block runs, its weights are on the device: the copy
was started earlier on a separate stream (`prefetch` blocks ahead), and the
compute stream waits on that copy's event; after the block runs, the device
copy is dropped. On CUDA the store is pinned, so copies overlap compute; on
other devices the same logic runs with ordinary copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class SwapStats:
    loads: int = 0
    waited_loads: int = 0  # loads that were not prefetched (compute had to wait for the copy)
    max_loaded: int = 0
    copy_bytes: int = 0


@dataclass
class _Slot:
    store: dict[str, torch.Tensor]  # parameter name -> storage copy
    device_copy: dict[str, torch.Tensor] | None = None
    ready: object | None = None  # CUDA event of the copy, when on CUDA
    order: list[str] = field(default_factory=list)


class BlockSwap:
    """Keeps `swapped` of `blocks` off the device except while they run."""

    def __init__(self, blocks: nn.ModuleList, swapped: int, device: torch.device | str, prefetch: int = 1):
        self.blocks, self.device, self.prefetch = blocks, torch.device(device), max(0, prefetch)
        self.swapped = list(range(min(max(swapped, 0), len(blocks))))
        cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if cuda else None
        self.stats = SwapStats()
        self.slots: dict[int, _Slot] = {}
        for index, block in enumerate(blocks):
            if index not in self.swapped:
                block.to(self.device)
                continue
            store = {name: (p.detach().cpu().pin_memory() if cuda else p.detach().cpu().clone())
                     for name, p in block.named_parameters()}
            self.slots[index] = _Slot(store)
            self._drop(index)
        self._handles = [blocks[i].register_forward_pre_hook(self._before(i)) for i in self.swapped]
        self._handles += [blocks[i].register_forward_hook(self._after(i)) for i in self.swapped]

    def remove(self) -> None:
        """Put every block back on the device and remove the hooks."""
        for handle in self._handles:
            handle.remove()
        for index in list(self.slots):
            self._load(index)
            self._wait(index)
            self.slots[index].device_copy = None
        self.slots.clear()

    def _params(self, index: int) -> dict[str, nn.Parameter]:
        return dict(self.blocks[index].named_parameters())

    def _load(self, index: int) -> None:
        """Start copying a block's weights to the device (on the copy stream when there is one)."""
        slot = self.slots[index]
        if slot.device_copy is not None:
            return
        if self.copy_stream is not None:
            with torch.cuda.stream(self.copy_stream):
                slot.device_copy = {n: t.to(self.device, non_blocking=True) for n, t in slot.store.items()}
                slot.ready = torch.cuda.Event()
                slot.ready.record(self.copy_stream)
        else:
            slot.device_copy = {n: t.to(self.device, copy=True) for n, t in slot.store.items()}
        self.stats.loads += 1
        self.stats.copy_bytes += sum(t.numel() * t.element_size() for t in slot.store.values())
        loaded = sum(s.device_copy is not None for s in self.slots.values())
        self.stats.max_loaded = max(self.stats.max_loaded, loaded)

    def _wait(self, index: int) -> None:
        """Make the block's parameters point at its device copy, after the copy has finished."""
        slot = self.slots[index]
        if slot.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(slot.ready)
        for name, param in self._params(index).items():
            param.data = slot.device_copy[name]

    def _drop(self, index: int) -> None:
        slot = self.slots[index]
        for name, param in self._params(index).items():
            if slot.device_copy is not None and self.copy_stream is not None:
                slot.device_copy[name].record_stream(torch.cuda.current_stream(self.device))
            param.data = torch.empty(0, dtype=param.dtype, device=self.device)
        slot.device_copy, slot.ready = None, None

    def _next_swapped(self, index: int) -> list[int]:
        position = self.swapped.index(index)
        ahead = self.swapped[position + 1:position + 1 + self.prefetch]
        if len(ahead) < self.prefetch:  # wrap to the next forward (next sampling step)
            ahead += self.swapped[:self.prefetch - len(ahead)]
        return [i for i in ahead if i != index]

    def _before(self, index: int):
        def hook(module, args):
            if self.slots[index].device_copy is None:
                self.stats.waited_loads += 1
                self._load(index)
            self._wait(index)
            for upcoming in self._next_swapped(index):
                self._load(upcoming)
        return hook

    def _after(self, index: int):
        def hook(module, args, output):
            self._drop(index)
        return hook


def block_bytes(block: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in block.parameters())
