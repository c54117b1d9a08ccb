"""Quantised weight storage: linears whose weights stay compressed until used.

A quantised linear keeps its stored weight and exposes `dequantize(dtype)`
(a tensor of its own) and a `compute_dtype`; model code asks for weights
through `weight_of` and for the input dtype through `compute_dtype_of`, so
every storage format (fp8, GGUF) plugs in the same way.

When a layer runs without autograd, its dense weight is written into one
buffer per (device, dtype) shared by every quantised layer (`SHARED`): layers
run one after another, so the buffer only ever holds the weight of the layer
running now, and no layer allocates (and page-faults) a fresh weight-sized
tensor per call. With autograd on, the weight is a fresh tensor, since
backward needs it after the next layer has run. Under torch.compile the
dequantisation is left to the compiler, which fuses it into one kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


class SharedBuffers:
    """One grow-only buffer per (device, dtype, role), reused by every quantised layer."""

    def __init__(self):
        self._buffers: dict[tuple, torch.Tensor] = {}

    def get(self, numel: int, dtype: torch.dtype, device: torch.device, role: str = "weight") -> torch.Tensor:
        """A contiguous 1-D tensor of `numel` elements (contents undefined)."""
        key = (torch.device(device), dtype, role)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            self._buffers.pop(key, None)  # drop the smaller one before allocating the larger
            buffer = self._buffers[key] = torch.empty(numel, dtype=dtype, device=device)
        return buffer[:numel]

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())

    def clear(self) -> None:
        """Free every buffer (the next quantised layer allocates again)."""
        self._buffers.clear()


SHARED = SharedBuffers()


def _share_buffers() -> bool:
    """Shared buffers only where nothing keeps the weight: no autograd, no compiler tracing."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


class Fp8Linear(nn.Linear):
    """Linear with an fp8 (e4m3fn/e5m2) weight and a per-tensor scale, upcast per call."""

    def __init__(self, in_features: int, out_features: int, bias: bool,
                 compute_dtype: torch.dtype, device=None):
        super().__init__(in_features, out_features, bias=bias, device=device)
        self.compute_dtype = compute_dtype
        self.register_buffer("scale_weight", torch.ones((), device=device))

    def dequantize(self, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
        """The weight times its scale in `dtype` (into `out` when given), rounded once as float32-then-cast."""
        scale = self.scale_weight
        if scale.numel() != 1:  # a per-channel scale: broadcast in the compute dtype
            return self.weight.to(dtype) * scale.to(dtype)
        # a 0-dim float32 scale multiplies as a float32 scalar, so each product is rounded once
        scale = scale.float().reshape(())
        if out is None:
            return self.weight.to(dtype) * scale
        dense = out.view(-1)[:self.weight.numel()].view(self.weight.shape)
        return dense.copy_(self.weight).mul_(scale)  # fp8 values are exact in bf16, fp16 and fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        out = SHARED.get(self.weight.numel(), x.dtype, x.device) if _share_buffers() else None
        return F.linear(x, self.dequantize(x.dtype, out), bias)


class GGUFLinear(nn.Linear):
    """Linear whose weight stays in GGUF blocks (uint8) and is dequantised on its device per call."""

    def __init__(self, in_features: int, out_features: int, bias: bool, ggml_type: str,
                 compute_dtype: torch.dtype, device=None):
        super().__init__(in_features, out_features, bias=bias, device=device)
        self.ggml_type, self.compute_dtype = ggml_type, compute_dtype
        self.weight = nn.Parameter(torch.empty(0, dtype=torch.uint8, device=device), requires_grad=False)

    def dequantize(self, dtype: torch.dtype, shared: bool = False) -> torch.Tensor:
        """The dense weight in `dtype`; `shared` writes it into the shared buffer (valid until the next layer)."""
        return _gguf_dense(self.weight, self.ggml_type, (self.out_features, self.in_features), dtype, shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantize(x.dtype, _share_buffers()), bias)


class GGUFConv3d(nn.Conv3d):
    """Conv3d whose weight stays in GGUF blocks, dequantised per call."""

    def __init__(self, conv: nn.Conv3d, ggml_type: str, compute_dtype: torch.dtype):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         bias=conv.bias is not None, device=conv.weight.device)
        self.ggml_type, self.compute_dtype = ggml_type, compute_dtype
        self.weight_shape = tuple(conv.weight.shape)
        self.weight = nn.Parameter(torch.empty(0, dtype=torch.uint8, device=conv.weight.device),
                                   requires_grad=False)

    def dequantize(self, dtype: torch.dtype, shared: bool = False) -> torch.Tensor:
        """The dense weight in `dtype`; `shared` writes it into the shared buffer (valid until the next layer)."""
        return _gguf_dense(self.weight, self.ggml_type, self.weight_shape, dtype, shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv3d(x, self.dequantize(x.dtype, _share_buffers()), bias, self.stride, self.padding)


def _gguf_dense(raw: torch.Tensor, ggml_type: str, shape: tuple[int, ...], dtype: torch.dtype,
                shared: bool) -> torch.Tensor:
    from .gguf_decode import dequantize, work_numel

    if not shared:
        return dequantize(raw, ggml_type, shape, dtype)
    numel = 1
    for size in shape:
        numel *= size
    needed = work_numel(ggml_type, dtype, numel, raw.device)
    work = SHARED.get(needed, torch.float32, raw.device, "work") if needed else None
    return dequantize(raw, ggml_type, shape, dtype, out=SHARED.get(numel, dtype, raw.device), work=work)


def install_gguf_layers(model: nn.Module, quantized: dict[str, str], compute_dtype: torch.dtype) -> int:
    """Swap each Linear/Conv3d whose `<name>.weight` is GGUF-quantised (name -> type) for a GGUF layer."""
    swapped = 0
    for name, module in list(model.named_modules()):
        ggml_type = quantized.get(f"{name}.weight")
        if ggml_type is None:
            continue
        if type(module) is nn.Linear:
            layer = GGUFLinear(module.in_features, module.out_features, module.bias is not None, ggml_type,
                               compute_dtype, module.weight.device)
        elif type(module) is nn.Conv3d:
            layer = GGUFConv3d(module, ggml_type, compute_dtype)
        else:
            continue
        parent_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, leaf, layer)
        swapped += 1
    return swapped


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
