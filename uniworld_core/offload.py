"""The one offload mechanism: a model lives on a storage device and visits the compute device.

    placement = Placement(vlm, compute=torch.device("cuda"), storage=torch.device("cpu"))
    with placement.active() as model:   # on the GPU inside, back on the CPU afterwards
        features = model(...)

With `storage=None` the model simply stays on the compute device. Encoders
(VLM, umT5) and the VAE use this between uses; block swap of the DiT builds
on the same idea at the granularity of blocks.
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


class Placement:
    """Where a module runs and where it waits between runs."""

    def __init__(self, module: nn.Module, compute: torch.device | str,
                 storage: torch.device | str | None = None):
        self.module = module
        self.compute = torch.device(compute)
        self.storage = None if storage is None else torch.device(storage)
        if self.storage is None:
            module.to(self.compute)
        # with a storage device the module stays where it was loaded until its first use

    @property
    def offloads(self) -> bool:
        return self.storage is not None and self.storage != self.compute

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The module on the compute device for the duration of the block."""
        if not self.offloads:
            yield self.module
            return
        self.module.to(self.compute)
        try:
            yield self.module
        finally:
            self.module.to(self.storage)
            release_cached_memory(self.compute)
