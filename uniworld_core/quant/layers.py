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
E4M3_MAX = 448.0  # the largest finite float8_e4m3fn


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

    # Opt-in (`use_fp8_matmul`): multiply in fp8 on the tensor cores instead of upcasting the weight. The
    # input is rounded to e4m3 too, which the upcast path never does: faster, less exact.
    scaled_matmul: bool = False

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
        # the fp8 matmul has no backward: with autograd on, the upcast path runs
        if self.scaled_matmul and not torch.is_grad_enabled() and _fp8_matmul_layer(self, x.device):
            return scaled_fp8_linear(x, self.weight, self.scale_weight, bias)
        out = SHARED.get(self.weight.numel(), x.dtype, x.device) if _share_buffers() else None
        return F.linear(x, self.dequantize(x.dtype, out), bias)


def fp8_matmul_supported(device: torch.device) -> bool:
    """Whether `torch._scaled_mm` runs on `device`: CUDA GPUs of compute capability 8.9+ (Ada, Hopper and
    later) and PyTorch's CPU kernel where it takes row-wise scales (correct, not fast: for tests)."""
    global _CPU_ROWWISE
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    if device.type != "cpu":
        return False
    if _CPU_ROWWISE is None:  # probed once, by `use_fp8_matmul`, before any forward (and any compile) asks
        _CPU_ROWWISE = _cpu_rowwise_scaled_mm()
    return _CPU_ROWWISE


_CPU_ROWWISE: bool | None = None


def _cpu_rowwise_scaled_mm() -> bool:
    """Whether this PyTorch's CPU `_scaled_mm` takes row-wise scales (2.13 does; 2.11 only per-tensor ones)."""
    codes = torch.zeros(16, 16, dtype=torch.float8_e4m3fn)
    try:
        torch._scaled_mm(codes, codes.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16),
                         out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError):
        return False
    return True


# Rounding the input to fp8 is a pass over it, and the matmul saves time in proportion to the output width:
# on an H200 at 65,520 tokens the fp8 matmul took 0.67-0.87x a bf16 linear for every output of 5120 or more
# (the 14B's, and the 1.3B's 8960) and 1.75-1.78x for the 1.3B's 1536 (docs/benchmarks.md). Narrower layers
# keep the upcast path.
FP8_MATMUL_MIN_OUT = 4096


def _fp8_matmul_layer(layer: Fp8Linear, device: torch.device) -> bool:
    """Whether the fp8 matmul runs this layer on `device`: an e4m3 weight, both weight dimensions multiples
    of 16 (the kernel's tiles) and an output at least `FP8_MATMUL_MIN_OUT` wide."""
    return (layer.weight.dtype == torch.float8_e4m3fn and layer.in_features % 16 == 0
            and layer.out_features % 16 == 0 and layer.out_features >= FP8_MATMUL_MIN_OUT
            and fp8_matmul_supported(device))


def scaled_fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] times an e4m3 weight [out, in] (per-tensor or per-output-channel scale) in fp8.

    Each row of x (a token) is scaled so that its largest value is e4m3's largest and rounded to e4m3;
    the kernel multiplies the fp8 codes and applies both scales to its float32 sums. Returns x's dtype.
    In bf16 the input's scaling is two passes (a max, then a multiply and the cast): at the 14B's widths a
    float32 detour cost more than the fp8 matmul saves. fp16 inputs take it (its range is too small).
    """
    rows = x.reshape(-1, x.shape[-1])
    if rows.dtype != torch.bfloat16:  # fp16's range cannot hold 448 / amax of a small row; fp32 is as is
        rows = rows.float()
    amax = torch.linalg.vector_norm(rows, ord=float("inf"), dim=1, keepdim=True).float().clamp(min=1e-12)
    inverse = (E4M3_MAX / amax).to(rows.dtype)  # [M, 1]; rounded to bf16 there, so undo exactly that
    codes = (rows * inverse).to(torch.float8_e4m3fn)  # |values| <= 448 (1 + 2^-8) round to 448, never past
    scale_x = inverse.float().reciprocal()
    scale_w = weight_scale.float().reshape(1, -1).expand(1, weight.shape[0]).contiguous()  # [1, out]
    # Row-wise scales take a bf16 result: exact enough for its sums, and cast once to x's dtype.
    y = torch._scaled_mm(codes, weight.t(), scale_a=scale_x, scale_b=scale_w, out_dtype=torch.bfloat16)
    y = y.to(x.dtype).reshape(*x.shape[:-1], weight.shape[0])
    return y if bias is None else y + bias


def use_fp8_matmul(model: nn.Module, enabled: bool = True, device: torch.device | str | None = None) -> int:
    """Switch every fp8 linear of `model` to (or back from) the fp8 matmul; returns how many layers can
    use it on `device` (default: where each weight is; a model loaded to the CPU for block swap names the GPU
    it will run on). Layers whose weight or device does not allow it keep the upcast path."""
    layers = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    for layer in layers:
        layer.scaled_matmul = enabled
    return sum(_fp8_matmul_layer(m, torch.device(device) if device is not None else m.weight.device)
               for m in layers) if enabled else 0


def enable_fp8_matmul(model: nn.Module, device: torch.device | str) -> str:
    """The CLI's --fp8-matmul and the DiT loader node's `fp8_matmul`: the fp8 matmul for every layer that can
    use it on `device`, the device the blocks run on (swapped ones are stored on the CPU), when that is a
    CUDA GPU; PyTorch's CPU kernel is exact but slow, there for tests. Returns the line saying what it did."""
    count = use_fp8_matmul(model, device=device) if torch.device(device).type == "cuda" else 0
    if count:
        return f"fp8 matmul: {count} fp8 linear{'s' if count > 1 else ''} multiply in fp8"
    return ("fp8 matmul: no layer can use it here (it needs fp8 e4m3 linears at least 4096 outputs wide, on a GPU "
            "of compute capability 8.9+); the weights are upcast as usual")


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
