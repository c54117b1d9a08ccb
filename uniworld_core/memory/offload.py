"""The one offload mechanism of the pack: a `SwapUnit` of weights that lives in CPU RAM.

A unit (a whole encoder, the VAE, or one DiT block) keeps its weights in a
store (pinned CPU memory on CUDA). Between uses its parameters hold empty
placeholders, so nothing of it stays on the compute device and an un-loaded
unit can never run by mistake. `load` starts the copy to the device (on a copy
stream on CUDA, so it overlaps compute), `wait` points the parameters at the
copy once it has arrived, `drop` releases it.

* `Placement`: one unit for a whole model, loaded for the duration of
  `with placement.active():` (VLM, umT5, VAE).
* `BlockSwap` (blockswap.py): one unit per DiT block, prefetched ahead of use.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def release_cached_memory(device: torch.device) -> None:
    """Return freed blocks of the device allocator to the driver (no-op on the CPU)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
    elif device.type == "npu" and hasattr(torch, "npu"):
        torch.npu.empty_cache()


def move_buffers(module: nn.Module, device: torch.device | str) -> None:
    """Move `module`'s buffers (fp8 scales and the like), not its parameters, to `device`.

    Swapped weights visit the device; their buffers are small and move once and stay, so a layer never
    meets its weight on the GPU and its scale in CPU RAM.
    """
    for name, buffer in list(module.named_buffers()):
        owner, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(owner) if owner else module, leaf, buffer.to(device))


class SwapUnit:
    """Weights of `module` stored off-device; on the device only between `load`/`wait` and `drop`."""

    def __init__(self, module: nn.Module, device: torch.device, copy_stream=None):
        self.module, self.device, self.copy_stream = module, device, copy_stream
        pin = device.type == "cuda"  # pinned memory lets copies overlap compute; elsewhere keep the tensor
        self.store = {name: (p.detach().cpu().pin_memory() if pin else p.detach().cpu())
                      for name, p in module.named_parameters()}
        self.device_copy: dict[str, torch.Tensor] | None = None
        self.ready = None
        self.drop()
        move_buffers(module, device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.store.values())

    @property
    def loaded(self) -> bool:
        return self.device_copy is not None

    def load(self) -> bool:
        """Start copying the weights to the device; False when they are already there."""
        if self.device_copy is not None:
            return False
        if self.copy_stream is not None:
            with torch.cuda.stream(self.copy_stream):
                self.device_copy = {n: t.to(self.device, non_blocking=True) for n, t in self.store.items()}
                self.ready = torch.cuda.Event()
                self.ready.record(self.copy_stream)
        else:
            self.device_copy = {n: t.to(self.device, copy=True) for n, t in self.store.items()}
        return True

    def wait(self) -> None:
        """Point the parameters at the device copy once the copy has finished."""
        if self.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(self.ready)
        for name, param in self.module.named_parameters():
            param.data = self.device_copy[name]

    def drop(self) -> None:
        """Release the device copy; the parameters become empty placeholders."""
        for name, param in self.module.named_parameters():
            if self.device_copy is not None and self.copy_stream is not None:
                self.device_copy[name].record_stream(torch.cuda.current_stream(self.device))
            param.data = torch.empty(0, dtype=param.dtype, device=self.device)
        self.device_copy, self.ready = None, None

    def restore(self) -> None:
        """Leave the mechanism: the weights stay on the device for good."""
        self.load()
        self.wait()
        self.device_copy = None


class Placement:
    """Where a model runs, and whether it waits in CPU RAM between runs."""

    def __init__(self, module: nn.Module, compute: torch.device | str, offload: bool = False):
        self.module = module
        self.compute = torch.device(compute)
        self.unit: SwapUnit | None = None
        if offload:
            for buffer in module.buffers():  # buffers are small; they stay on the device
                buffer.data = buffer.data.to(self.compute)
            self.unit = SwapUnit(module, self.compute)
        else:
            module.to(self.compute)

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The module with its weights on the compute device for the duration of the block."""
        if self.unit is None:
            yield self.module
            return
        self.unit.load()
        self.unit.wait()
        try:
            yield self.module
        finally:
            self.unit.drop()
            release_cached_memory(self.compute)
