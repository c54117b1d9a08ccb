"""GGML block formats, dequantised in torch on the weight's device.

Each function takes the raw bytes of n blocks as uint8 [n, block_bytes] and
returns float32 [n, block_size]. Layouts are ggml's (the facts every GGUF
reader shares); `gguf`'s numpy dequantiser is the reference in the tests.
"""

from __future__ import annotations

import torch

QK_K = 256
# type name -> (values per block, bytes per block)
BLOCKS = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2),
    "Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
}


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 stored at byte `start` of every block, as float32 [n, 1]."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """[n, k] bytes -> [n, 2k]: the k low nibbles, then the k high nibbles."""
    return torch.cat([packed & 0x0F, packed >> 4], dim=1)


def _bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """Little-endian bits of [n, bytes] -> [n, count] (bit i of the block)."""
    shifts = torch.arange(8, device=packed.device, dtype=torch.uint8)
    return ((packed[:, :, None] >> shifts) & 1).flatten(1)[:, :count]


def q8_0(b):
    return _f16(b, 0) * b[:, 2:].contiguous().view(torch.int8).float()


def q4_0(b):
    return _f16(b, 0) * (_nibbles(b[:, 2:]).float() - 8)


def q4_1(b):
    return _f16(b, 0) * _nibbles(b[:, 4:]).float() + _f16(b, 2)


def q5_0(b):
    high = _bits(b[:, 2:6], 32) << 4
    return _f16(b, 0) * ((_nibbles(b[:, 6:]) | high).float() - 16)


def q5_1(b):
    high = _bits(b[:, 4:8], 32) << 4
    return _f16(b, 0) * (_nibbles(b[:, 8:]) | high).float() + _f16(b, 2)


def _scale_min_k4(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eight 6-bit scales and mins packed in 12 bytes (Q4_K, Q5_K) -> [n, 8] each."""
    s = scales.to(torch.int32)
    low_sc, low_m = s[:, 0:4] & 63, s[:, 4:8] & 63
    high_sc = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    high_m = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return torch.cat([low_sc, high_sc], 1).float(), torch.cat([low_m, high_m], 1).float()


def _k4_values(d, dmin, scales, q):
    """y = d*sc*q - dmin*m over 8 sub-blocks of 32; q is [n, 256]."""
    sc, m = _scale_min_k4(scales)
    q = q.view(-1, 8, 32).float()
    return (d[:, :, None] * sc[:, :, None] * q - dmin[:, :, None] * m[:, :, None]).flatten(1)


def _k_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """128 bytes -> 256 values: per 32-byte group, its 32 low nibbles then its 32 high nibbles."""
    groups = qs.view(-1, 4, 32)
    return torch.stack([groups & 0x0F, groups >> 4], dim=2).flatten(1)


def q4_k(b):
    return _k4_values(_f16(b, 0), _f16(b, 2), b[:, 4:16], _k_nibbles(b[:, 16:144]))


def q5_k(b):
    qh = b[:, 16:48]  # bit 2j of qh[l] belongs to group j's low half, bit 2j+1 to its high half
    shifts = torch.arange(8, device=b.device, dtype=torch.uint8)
    high = ((qh[:, None, :] >> shifts[:, None]) & 1).view(-1, 4, 2, 32).flatten(1)
    return _k4_values(_f16(b, 0), _f16(b, 2), b[:, 4:16], _k_nibbles(b[:, 48:176]) | (high << 4))


def q6_k(b):
    ql, qh = b[:, 0:128].view(-1, 2, 64), b[:, 128:192].view(-1, 2, 32)
    scales = b[:, 192:208].contiguous().view(torch.int8).float().view(-1, 2, 8)
    low = torch.stack([ql[:, :, :32] & 0x0F, ql[:, :, 32:] & 0x0F, ql[:, :, :32] >> 4, ql[:, :, 32:] >> 4], 2)
    high = torch.stack([(qh >> s) & 3 for s in (0, 2, 4, 6)], 2)
    q = ((low | (high << 4)).to(torch.int32) - 32).float()  # [n, 2 halves, 4 rows, 32]
    sc = scales.view(-1, 2, 4, 2).repeat_interleave(16, dim=3)  # 16 values share a scale
    return (_f16(b, 208)[:, :, None, None] * sc * q).flatten(1)


def _q3_scales(raw: torch.Tensor) -> torch.Tensor:
    """The sixteen 6-bit signed scales packed in 12 bytes (Q3_K) -> [n, 16] in -32..31."""
    aux = raw.contiguous().view(torch.int32)  # three little-endian words
    a0, a1, tmp = aux[:, 0], aux[:, 1], aux[:, 2]
    m2, m1 = 0x0F0F0F0F, 0x03030303
    words = torch.stack([(a0 & m2) | (((tmp >> 0) & m1) << 4), (a1 & m2) | (((tmp >> 2) & m1) << 4),
                         ((a0 >> 4) & m2) | (((tmp >> 4) & m1) << 4), ((a1 >> 4) & m2) | (((tmp >> 6) & m1) << 4)],
                        dim=1)
    return words.contiguous().view(torch.uint8).view(-1, 16).to(torch.int32) - 32


def q3_k(b):
    hmask, qs = b[:, 0:32], b[:, 32:96].view(-1, 2, 32)
    scales = _q3_scales(b[:, 96:108]).float().view(-1, 2, 4, 2)
    low = torch.stack([(qs >> s) & 3 for s in (0, 2, 4, 6)], 2)  # [n, half, shift, 32]
    bit = torch.arange(8, device=b.device, dtype=torch.uint8).view(1, 2, 4, 1)
    high = (hmask[:, None, None, :] >> bit) & 1
    q = low.to(torch.int32) - 4 * (1 - high.to(torch.int32))
    sc = scales.repeat_interleave(16, dim=3)
    return (_f16(b, 108)[:, :, None, None] * sc * q.float()).flatten(1)


def q2_k(b):
    scales, qs = b[:, 0:16].view(-1, 2, 4, 2), b[:, 16:80].view(-1, 2, 32)
    q = torch.stack([(qs >> s) & 3 for s in (0, 2, 4, 6)], 2).float()  # [n, half, shift, 32]
    sc = (scales & 0x0F).float().repeat_interleave(16, dim=3)
    mins = (scales >> 4).float().repeat_interleave(16, dim=3)
    d, dmin = _f16(b, 80)[:, :, None, None], _f16(b, 82)[:, :, None, None]
    return (d * sc * q - dmin * mins).flatten(1)


DEQUANTIZERS = {"Q8_0": q8_0, "Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1,
                "Q2_K": q2_k, "Q3_K": q3_k, "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}


def dequantize(raw: torch.Tensor, type_name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Raw GGUF bytes (uint8, any shape) of a tensor of `shape` -> dense `dtype` tensor."""
    if type_name == "F32":
        return raw.contiguous().view(torch.float32).reshape(shape).to(dtype)
    if type_name == "F16":
        return raw.contiguous().view(torch.float16).reshape(shape).to(dtype)
    if type_name == "BF16":
        return raw.contiguous().view(torch.bfloat16).reshape(shape).to(dtype)
    _, block_bytes = BLOCKS[type_name]
    values = DEQUANTIZERS[type_name](raw.reshape(-1, block_bytes))
    return values.reshape(shape).to(dtype)
