"""One device/dtype policy for every model of the pack.

Devices: CUDA, Ascend NPU (through the optional `torch_npu`), Apple MPS, CPU.
Weights may be stored in bf16/fp16, but the parts the official code keeps in
float32 (norms, modulation, the time embedding MLP) stay float32 (the time
MLP's weights may keep their stored dtype and are upcast at each use, which
computes the same numbers), and the latent-shift arithmetic of the sampler
always runs in float32.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Parameters that keep float32 storage when a model is cast to a low precision.
FP32_PARAMETERS = re.compile(
    r"(^|\.)(norm\w*|modulation|time_embedding|time_projection|gamma)(\.|$)")
# Of those, the time MLP's: computed in float32 at every use (the DiT upcasts them, once per step), so in
# a low-precision model they may keep the dtype they were stored in: the same numbers as float32 copies of
# the same values, without holding both (157M parameters of the 14B model's time projection).
FP32_COMPUTED = re.compile(r"(^|\.)(time_embedding|time_projection)(\.|$)")


@lru_cache(maxsize=1)
def npu_available() -> bool:
    """True when `torch_npu` imports and an Ascend device is visible."""
    try:
        importlib.import_module("torch_npu")
    except ImportError:
        return False
    return bool(getattr(torch, "npu", None) and torch.npu.is_available())


def pick_device(preference: str = "auto") -> torch.device:
    """Resolve 'auto' (CUDA > NPU > MPS > CPU) or an explicit device string."""
    if preference != "auto":
        if preference.startswith("npu"):
            npu_available()  # registers the 'npu' device type with torch
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if npu_available():
        return torch.device("npu")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """The fastest precision the device runs well: bf16 on accelerators, fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type in ("npu", "mps"):
        return torch.bfloat16 if device.type == "npu" else torch.float16
    return torch.float32


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto', 'fp32', 'bf16', 'fp16' or a torch dtype -> torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        return default_dtype(device)
    if name not in DTYPES:
        raise ValueError(f"unknown precision {name!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def keeps_fp32(parameter_name: str) -> bool:
    """Whether a parameter stays float32 under the policy."""
    return bool(FP32_PARAMETERS.search(parameter_name))


def storage_dtype(parameter_name: str, stored: torch.dtype, dtype: torch.dtype) -> torch.dtype:
    """The dtype a float parameter stored as `stored` is held in by a model of `dtype`, under the policy."""
    if dtype != torch.float32 and FP32_COMPUTED.search(parameter_name) and stored in DTYPES.values():
        return stored  # computed in float32 at each use (see FP32_COMPUTED)
    return torch.float32 if keeps_fp32(parameter_name) else dtype


def cast_model(model: nn.Module, dtype: torch.dtype, device: torch.device | None = None) -> nn.Module:
    """Move a model to `device` and store its weights in `dtype`, except the fp32 set."""
    for name, param in model.named_parameters():
        if param.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) or not param.is_floating_point():
            target = param.dtype  # quantised storage (fp8, GGUF bytes) stays as stored (see quant.py)
        else:
            target = storage_dtype(name, param.dtype, dtype)
        param.data = param.data.to(device=device or param.device, dtype=target)
    for buf_name, buf in model.named_buffers():
        if device is not None:
            module_name, _, leaf = buf_name.rpartition(".")
            owner = model.get_submodule(module_name) if module_name else model
            owner._buffers[leaf] = buf.to(device)
    return model


def float64_supported(device: torch.device) -> bool:
    """MPS has no float64; every other device of the policy does."""
    return device.type != "mps"


def device_rng_states() -> dict[str, list]:
    """RNG states of the accelerators present (CUDA, NPU), for exact training resumes."""
    states: dict[str, list] = {}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if npu_available():
        states["npu"] = torch.npu.get_rng_state_all()
    return states


def set_device_rng_states(states: dict[str, list]) -> None:
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "npu" in states and npu_available():
        torch.npu.set_rng_state_all(states["npu"])
