"""Quantised weight storage: linears whose weights stay compressed until used.

A quantised linear keeps its stored weight and exposes `dequantize(dtype)`
and a `compute_dtype`; model code asks for weights through `weight_of` and
for the input dtype through `compute_dtype_of`, so every storage format
(fp8 here; GGUF later) plugs in the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


class Fp8Linear(nn.Linear):
    """Linear with an fp8 (e4m3fn/e5m2) weight and a per-tensor scale, upcast per call."""

    def __init__(self, in_features: int, out_features: int, bias: bool,
                 compute_dtype: torch.dtype, device=None):
        super().__init__(in_features, out_features, bias=bias, device=device)
        self.compute_dtype = compute_dtype
        self.register_buffer("scale_weight", torch.ones((), device=device))

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        return self.weight.to(dtype) * self.scale_weight.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantize(x.dtype), bias)


def dense_tensor(read, names: set[str], name: str, dtype: torch.dtype) -> torch.Tensor:
    """`read(name)` as `dtype`; fp8 storage is dequantised with its `scale_weight` when present."""
    tensor = read(name)
    if tensor.dtype in FP8_DTYPES:
        scale_name = name.rsplit(".", 1)[0] + ".scale_weight"
        scale = read(scale_name).float() if scale_name in names else 1.0
        return (tensor.float() * scale).to(dtype)
    return tensor.to(dtype)


def weight_of(layer: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The layer's weight as a dense tensor of `dtype`."""
    if hasattr(layer, "dequantize"):
        return layer.dequantize(dtype)
    return layer.weight.to(dtype)


def compute_dtype_of(layer: nn.Module) -> torch.dtype:
    """The dtype a layer wants its input in."""
    return getattr(layer, "compute_dtype", layer.weight.dtype)


def install_fp8_linears(model: nn.Module, fp8_weights: set[str], compute_dtype: torch.dtype) -> int:
    """Swap each nn.Linear whose `<name>.weight` is in `fp8_weights` for an Fp8Linear."""
    swapped = 0
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and f"{name}.weight" in fp8_weights:
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            device = module.weight.device
            setattr(parent, leaf, Fp8Linear(module.in_features, module.out_features,
                                            module.bias is not None, compute_dtype, device))
            swapped += 1
    return swapped
