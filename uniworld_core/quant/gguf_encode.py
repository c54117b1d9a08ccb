"""Quantisers for the K-quant types the `gguf` package cannot write (Q4_K, Q5_K, Q6_K).

Straightforward min/max (Q4_K, Q5_K) and abs-max (Q6_K) scale fitting per
sub-block, packed in ggml's layouts; `gguf`'s own dequantiser reads the
result (tested). Other types are quantised with `gguf.quants.quantize`.
"""

from __future__ import annotations

import numpy as np
import torch

QK_K = 256


def _f16_bytes(values: torch.Tensor) -> torch.Tensor:
    return values.to(torch.float16).contiguous().view(torch.uint8).view(-1, 2)


def _pack_scale_min_k4(sc: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Eight 6-bit scales and mins [n, 8] -> the 12-byte ggml packing."""
    sc, m = sc.to(torch.int32), m.to(torch.int32)
    first = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    second = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    third = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return torch.cat([first, second, third], 1).to(torch.uint8)


def _fit_k4(x: torch.Tensor, levels: int):
    """Per sub-block of 32: y = d*sc*q - dmin*m with 6-bit sc, m. Returns (d, dmin, sc, m, q)."""
    sub = x.view(-1, 8, 32)
    low = sub.amin(-1).clamp(max=0)
    scale, mins = (sub.amax(-1) - low) / levels, -low
    d, dmin = scale.amax(-1, keepdim=True) / 63, mins.amax(-1, keepdim=True) / 63
    d16, dmin16 = d.half().float(), dmin.half().float()
    sc = torch.where(d16 > 0, (scale / d16.clamp_min(1e-30)).round(), torch.zeros_like(scale)).clamp(0, 63)
    m = torch.where(dmin16 > 0, (mins / dmin16.clamp_min(1e-30)).round(), torch.zeros_like(mins)).clamp(0, 63)
    step, offset = (d16 * sc)[..., None], (dmin16 * m)[..., None]
    q = torch.where(step > 0, ((sub + offset) / step.clamp_min(1e-30)).round(), torch.zeros_like(sub))
    return d16, dmin16, sc, m, q.clamp(0, levels).to(torch.uint8).view(-1, QK_K)


def _pack_k_nibbles(q: torch.Tensor) -> torch.Tensor:
    """[n, 256] 4-bit values -> 128 bytes: per group of 64, 32 low nibbles and 32 high nibbles."""
    groups = q.view(-1, 4, 2, 32)
    return (groups[:, :, 0] | (groups[:, :, 1] << 4)).flatten(1)


def quantize_q4_k(x: torch.Tensor) -> torch.Tensor:
    d, dmin, sc, m, q = _fit_k4(x.float().reshape(-1, QK_K), 15)
    return torch.cat([_f16_bytes(d), _f16_bytes(dmin), _pack_scale_min_k4(sc, m), _pack_k_nibbles(q)], 1)


def quantize_q5_k(x: torch.Tensor) -> torch.Tensor:
    d, dmin, sc, m, q = _fit_k4(x.float().reshape(-1, QK_K), 31)
    high = (q >> 4).view(-1, 8, 32)  # bit j of qh[l] is the high bit of sub-block j, value l
    shifts = torch.arange(8, dtype=torch.uint8).view(1, 8, 1)
    qh = (high << shifts).sum(1, dtype=torch.int32).to(torch.uint8)
    return torch.cat([_f16_bytes(d), _f16_bytes(dmin), _pack_scale_min_k4(sc, m), qh,
                      _pack_k_nibbles(q & 0x0F)], 1)


def quantize_q6_k(x: torch.Tensor) -> torch.Tensor:
    sub = x.float().reshape(-1, 16, 16)
    amax = sub.abs().amax(-1)
    scale = amax / 31
    d = (scale.amax(-1, keepdim=True) / 127).half().float()
    sc = torch.where(d > 0, (scale / d.clamp_min(1e-30)).round(), torch.zeros_like(scale)).clamp(-128, 127)
    step = (d * sc)[..., None]
    q = torch.where(step != 0, (sub / torch.where(step != 0, step, torch.ones_like(step))).round(),
                    torch.zeros_like(sub)).clamp(-32, 31) + 32
    q = q.to(torch.uint8).view(-1, 2, 4, 32)  # [block, half, row, 32]: value index = row*32 + l
    ql = torch.cat([(q[:, :, 0] & 0x0F) | ((q[:, :, 2] & 0x0F) << 4),
                    (q[:, :, 1] & 0x0F) | ((q[:, :, 3] & 0x0F) << 4)], 2).flatten(1)
    qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6))
    scales = sc.to(torch.int8).view(torch.uint8)
    return torch.cat([ql, qh.flatten(1), scales, _f16_bytes(d)], 1)


OUR_QUANTIZERS = {"Q4_K": quantize_q4_k, "Q5_K": quantize_q5_k, "Q6_K": quantize_q6_k}


def quantize(data: torch.Tensor, type_name: str) -> np.ndarray:
    """Quantise a 2-D tensor (last dim a multiple of the block size) to GGUF bytes [rows, bytes/row]."""
    import gguf

    rows = data.shape[0]
    if type_name in OUR_QUANTIZERS:
        return OUR_QUANTIZERS[type_name](data.reshape(-1)).reshape(rows, -1).numpy()
    qtype = gguf.GGMLQuantizationType[type_name]
    return gguf.quants.quantize(data.float().numpy(), qtype)
