"""Pluggable attention: one function signature, several kernels.

All backends take q, k, v as [B, L, heads, head_dim] (the layout of the
official Wan code and of flash-attn) and return the same layout.
`sdpa` (PyTorch) is always available; `flash_attn`, `sage` and `npu` are used
when their optional packages import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..device import npu_available

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch scaled-dot-product attention (picks flash/mem-efficient/math itself)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _flash_attn(q, k, v):
    from flash_attn import flash_attn_func

    dtype = q.dtype
    if dtype not in (torch.float16, torch.bfloat16):  # flash-attn runs half precision only
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
    return flash_attn_func(q, k, v).to(dtype)


def _sage_attn(q, k, v):
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


def _npu_attn(q, k, v):
    import torch_npu

    heads, head_dim = q.shape[2], q.shape[3]
    return torch_npu.npu_fusion_attention(
        q, k, v, heads, input_layout="BSND", scale=head_dim**-0.5,
        pre_tockens=2**31 - 1, next_tockens=2**31 - 1)[0]


_BACKENDS: dict[str, tuple[AttentionFn, str | None]] = {
    "sdpa": (sdpa_attention, None),
    "flash_attn": (_flash_attn, "flash_attn"),
    "sage": (_sage_attn, "sageattention"),
    "npu": (_npu_attn, "torch_npu"),
}


def available_backends() -> list[str]:
    """Names of the attention backends whose packages are importable here."""
    names = []
    for name, (_, package) in _BACKENDS.items():
        if package is None:
            names.append(name)
            continue
        try:
            importlib.import_module(package)
        except ImportError:
            continue
        if name != "npu" or npu_available():
            names.append(name)
    return names


def get_attention(name: str = "auto", device: torch.device | None = None) -> AttentionFn:
    """Return the attention function for `name`; 'auto' picks the best one for `device`."""
    if name == "auto":
        have = available_backends()
        if device is not None and device.type == "npu" and "npu" in have:
            name = "npu"
        elif device is not None and device.type == "cuda" and "flash_attn" in have:
            name = "flash_attn"
        else:
            name = "sdpa"
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose auto or one of {list(_BACKENDS)}")
    if name not in available_backends():
        raise ValueError(f"attention backend {name!r} is not installed here; "
                         f"available: {available_backends()}")
    return _BACKENDS[name][0]
