"""Pluggable attention: one function signature, several kernels.

All backends take q, k, v as [B, L, heads, head_dim] (the layout of the
official Wan code and of flash-attn) and return the same layout.
`sdpa` (PyTorch) and `chunked` (ours: query chunks, float32 scores, bounded
memory) are always available; `flash_attn`, `sage` and `npu` are used when
their optional packages import.

`auto` picks per device and dtype from `AUTO`, a table of what measured
fastest (bench/bench_peers.py, docs/benchmarks.md), so the same seed gives
the same video run after run; on CPUs with AVX512-BF16 and no AMX, bf16
inputs take `bf16_score_attention` (scores in bf16, faster there than the
CPU flash kernel). `measure` times the exact backends available
(SDPA, chunked, flash-attn on CUDA) on the first inputs of each shape and
keeps the fastest, for machines the table does not describe; its choice may
differ between runs, and with it the last bits of the video. SageAttention
quantises q and k to 8 bits, so it runs only when asked for by name.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..device import npu_available

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LOG = logging.getLogger("uniworld_core")
CHUNK_SCORE_BYTES = 2**28  # float32 scores held at once by `chunked` (256 MiB)
# device type -> backend `auto` uses, by preference. CPU: SDPA measured fastest in fp32 and bf16 against
# `chunked` and ComfyUI's sub-quadratic attention (docs/benchmarks.md), but for bf16 on CPUs with AVX512-BF16
# and no AMX, where bf16 scores win (`bf16_matmul_beats_cpu_sdpa`). CUDA: flash-attn when installed,
# else SDPA (which itself dispatches to flash/cuDNN kernels); not measured on a GPU yet. NPU: its fused kernel.
AUTO = {"cpu": ("sdpa",), "cuda": ("flash_attn", "sdpa"), "npu": ("npu", "sdpa"), "mps": ("sdpa",)}


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch scaled-dot-product attention (picks flash/mem-efficient/math itself)."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      max_score_bytes: int = CHUNK_SCORE_BYTES,
                      score_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over chunks of queries, the scores and softmax in `score_dtype` (float32).

    Memory is bounded by `max_score_bytes` of scores whatever the sequence
    length; only the probabilities are rounded to v's dtype for the second product.
    """
    batch, queries, heads, head_dim = q.shape
    q_heads = q.transpose(1, 2).reshape(batch * heads, queries, head_dim).to(score_dtype)
    keys_t = k.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, k.shape[1]).to(score_dtype)  # [BH, D, Lk]
    values = v.transpose(1, 2).reshape(batch * heads, v.shape[1], head_dim)
    rows = max(1, min(queries, max_score_bytes // max(1, batch * heads * k.shape[1] * keys_t.element_size())))
    out = torch.empty(batch * heads, queries, head_dim, dtype=v.dtype, device=v.device)
    unused = torch.empty(1, 1, 1, dtype=score_dtype, device=q.device)  # baddbmm's input, scaled by beta=0
    for start in range(0, queries, rows):
        scores = torch.baddbmm(unused, q_heads[:, start:start + rows], keys_t, beta=0, alpha=head_dim**-0.5)
        out[:, start:start + rows] = torch.bmm(torch.softmax(scores, dim=-1).to(v.dtype), values)
    return out.view(batch, heads, queries, head_dim).transpose(1, 2)


def bf16_score_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         max_score_bytes: int = CHUNK_SCORE_BYTES) -> torch.Tensor:
    """`chunked_attention` with the scores and softmax in the inputs' precision.

    For bf16 on CPUs whose bf16 matmul is fast but that lack AMX (where PyTorch's CPU flash kernel is the
    slower way): the scores round to bf16 (relative RMS 0.0053 against SDPA's 0.0037 at the 1.3B's
    shape; the bf16 DiT forward goes from 0.0044 to 0.0045 against float32). The softmax stays in bf16
    too (PyTorch accumulates in float32 inside): float32 probabilities cast back cost twice the time.
    """
    return chunked_attention(q, k, v, max_score_bytes, score_dtype=q.dtype)


def bf16_matmul_beats_cpu_sdpa() -> bool:
    """CPUs with AVX512-BF16 and without AMX: there the bf16 scores of `bf16_score_attention` beat the CPU
    flash kernel (2 cores of an AMD EPYC: the bf16 DiT forward then takes 0.96x ComfyUI's time; on an AMX
    Xeon, ComfyUI's bf16 scores took 2.86x SDPA's time; docs/benchmarks.md)."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                and not getattr(cpu, "_is_amx_tile_supported", lambda: True)())


def cpu_bf16_scores_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`auto` on the CPUs of `bf16_matmul_beats_cpu_sdpa`: bf16 inputs take bf16 scores, the rest SDPA."""
    if q.dtype == torch.bfloat16:
        return bf16_score_attention(q, k, v)
    return sdpa_attention(q, k, v)


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
    "chunked": (chunked_attention, None),
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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    elif device.type == "npu":
        torch.npu.synchronize()


class MeasuredAttention:
    """The `measure` backend: per (device, dtype, lengths, heads), the fastest candidate as measured on first use."""

    def __init__(self, candidates: dict[str, AttentionFn], log: Callable[[str], None] | None = None):
        self.candidates = candidates
        self.log = log or LOG.info
        self.choices: dict[tuple, str] = {}  # the decisions, for logs and tests
        self.__name__ = "measure"

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        key = (q.device.type, q.dtype, q.shape[1], k.shape[1], q.shape[2], q.shape[3])
        name = self.choices.get(key)
        if name is None:
            # no timing inside a graph torch.compile traces: the first candidate, SDPA
            name = next(iter(self.candidates)) if torch.compiler.is_compiling() else self._measure(key, q, k, v)
        return self.candidates[name](q, k, v)

    def _measure(self, key: tuple, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
        seconds = {}
        for name, fn in self.candidates.items():
            best = float("inf")
            for attempt in range(3):  # the first run warms up; the best of the next two counts
                _synchronize(q.device)
                start = time.perf_counter()
                fn(q, k, v)
                _synchronize(q.device)
                if attempt:
                    best = min(best, time.perf_counter() - start)
            seconds[name] = best
        choice = min(seconds, key=seconds.get)
        self.choices[key] = choice
        timings = ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in seconds.items())
        self.log(f"attention for {key[0]} {str(key[1]).removeprefix('torch.')}, {key[2]} x {key[3]} tokens: "
                 f"{choice} (measured: {timings}); choose one with --attention / the loader's attention input")
        return choice


def measured_candidates(device: torch.device | None) -> list[str]:
    """The exact backends `measure` times on `device`: SDPA and chunked, plus flash-attn on CUDA when installed."""
    names = ["sdpa", "chunked"]
    if device is not None and device.type == "cuda" and "flash_attn" in available_backends():
        names.append("flash_attn")
    return names


def auto_backend(device: torch.device | None) -> str:
    """The backend `auto` picks on `device` (see AUTO)."""
    have = available_backends()
    preferred = AUTO.get(device.type if device is not None else "cpu", ("sdpa",))
    return next((name for name in preferred if name in have and (name != "npu" or npu_available())), "sdpa")


def get_attention(name: str = "auto", device: torch.device | None = None,
                  log: Callable[[str], None] | None = None) -> AttentionFn:
    """The attention function for `name`: a backend, 'auto' (from AUTO) or 'measure' (fastest on first use)."""
    if name == "measure":
        return MeasuredAttention({n: _BACKENDS[n][0] for n in measured_candidates(device)}, log)
    if name == "auto":
        name = auto_backend(device)
        where = device.type if device is not None else "cpu"
        if name == "sdpa" and where == "cpu" and bf16_matmul_beats_cpu_sdpa():
            (log or LOG.info)("attention: sdpa, bf16 scores for bf16 (auto on a cpu with AVX512-BF16 and no AMX; "
                              "--attention / the loader's input overrides)")
            return cpu_bf16_scores_attention
        (log or LOG.info)(f"attention: {name} (auto on {where}; --attention / the loader's input overrides)")
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose auto, measure or one of {list(_BACKENDS)}")
    if name not in available_backends():
        raise ValueError(f"attention backend {name!r} is not installed here; "
                         f"available: {available_backends()}")
    return _BACKENDS[name][0]
