"""GGML block formats, dequantised in torch on the weight's device, in the target dtype.

Every format stores, per block, small integer codes and one or two scales
per sub-block; a value is `scale * code - offset`. Each decoder below turns
the raw bytes of n blocks (uint8 [n, block_bytes]) into
`Codes(codes [n, S, sub], scale [n, S, 1], offset [n, S, 1] or None)`: the
codes as uint8/int8 and the per-sub-block scales in float32 (they are 1/16
to 1/256 of the values, so their cost does not matter). `dequantize` then
writes the codes into the output and scales them in place, in as few passes
as it can, into buffers the caller may reuse (quant/layers.py shares one
across layers). On the CPU it does so a chunk of blocks at a time, so that
the passes over a chunk meet it in the cache.

Exactness: in float32 every value is `(d * sc) * q - (dmin * m)`, computed
in that order, as `gguf`'s numpy reference does: bit for bit the same. In
bf16/fp16 every value is that float32 value rounded once to the target
dtype: directly where the target dtype's own arithmetic gives the same
rounding (`_exact_in`), else through a float32 work tensor. Computing in
bf16 instead (scales rounded to bf16, then the product, then the offset
subtracted) would cost up to 4x the rounding error of the K formats, whose
offset cancels most of the product. Layouts are ggml's (the facts every
GGUF reader shares).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

QK_K = 256
# type name -> (values per block, bytes per block)
BLOCKS = {
    "F32": (1, 4), "F16": (1, 2), "BF16": (1, 2),
    "Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
}
FLOAT_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
CPU_CHUNK_VALUES = 1 << 20  # see _chunk_blocks


class Codes(NamedTuple):
    """value = scale * codes - offset, per sub-block."""

    codes: torch.Tensor  # [n, S, sub] uint8 / int8 / int32
    scale: torch.Tensor  # [n, S, 1] float32
    offset: torch.Tensor | None  # [n, S, 1] float32, or None


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 stored at byte `start` of every block, as float32 [n, 1]."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """[..., k] bytes -> [..., 2, k]: the k low nibbles, then the k high nibbles."""
    # shifts by a Python int run vectorised; a broadcast tensor of shifts is twice as slow on the CPU
    return torch.stack((packed & 0x0F, packed >> 4), dim=-2)


def _fields(packed: torch.Tensor, width: int) -> torch.Tensor:
    """[..., k] bytes -> [..., 8 // width, k]: the `width`-bit fields, lowest first."""
    mask = (1 << width) - 1
    return torch.stack([(packed >> shift) & mask for shift in range(0, 8, width)], dim=-2)


def _bits32(packed: torch.Tensor) -> torch.Tensor:
    """4 bytes per block, little-endian -> [n, 32]: bit i of the 32-bit word."""
    return _fields(packed, 1).transpose(1, 2).flatten(1)


def q8_0(b: torch.Tensor) -> Codes:
    return Codes(b[:, 2:].view(torch.int8)[:, None, :], _f16(b, 0)[:, :, None], None)


def q4_0(b: torch.Tensor) -> Codes:
    codes = _nibbles(b[:, 2:]).flatten(1).view(torch.int8) - 8
    return Codes(codes[:, None, :], _f16(b, 0)[:, :, None], None)


def q4_1(b: torch.Tensor) -> Codes:
    return Codes(_nibbles(b[:, 4:]).flatten(1)[:, None, :], _f16(b, 0)[:, :, None], -_f16(b, 2)[:, :, None])


def q5_0(b: torch.Tensor) -> Codes:
    codes = (_nibbles(b[:, 6:]).flatten(1) | (_bits32(b[:, 2:6]) << 4)).view(torch.int8) - 16
    return Codes(codes[:, None, :], _f16(b, 0)[:, :, None], None)


def q5_1(b: torch.Tensor) -> Codes:
    codes = _nibbles(b[:, 8:]).flatten(1) | (_bits32(b[:, 4:8]) << 4)
    return Codes(codes[:, None, :], _f16(b, 0)[:, :, None], -_f16(b, 2)[:, :, None])


def _scale_min_k4(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The eight 6-bit scales and mins packed in 12 bytes (Q4_K, Q5_K) -> float32 [n, 8] each."""
    s = scales.to(torch.int32)
    low_sc, low_m = s[:, 0:4] & 63, s[:, 4:8] & 63
    high_sc = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    high_m = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return torch.cat([low_sc, high_sc], 1).float(), torch.cat([low_m, high_m], 1).float()


def _k4_codes(b: torch.Tensor, q: torch.Tensor) -> Codes:
    """Q4_K/Q5_K: y = (d*sc) * q - (dmin*m) over 8 sub-blocks of 32."""
    sc, m = _scale_min_k4(b[:, 4:16])
    return Codes(q, (_f16(b, 0) * sc)[:, :, None], (_f16(b, 2) * m)[:, :, None])


def _k_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """128 bytes -> [n, 8, 32]: per 32-byte group, its 32 low nibbles then its 32 high nibbles."""
    return _nibbles(qs.reshape(-1, 4, 32)).view(-1, 8, 32)


def q4_k(b: torch.Tensor) -> Codes:
    return _k4_codes(b, _k_nibbles(b[:, 16:144]))


def q5_k(b: torch.Tensor) -> Codes:
    qh = b[:, 16:48]  # bit j of qh[l] is the fifth bit of sub-block j's value l: moved to bit 4 (16)
    high = torch.stack([(qh << (4 - j) if j <= 4 else qh >> (j - 4)) & 16 for j in range(8)], dim=1)
    return _k4_codes(b, _k_nibbles(b[:, 48:176]).bitwise_or_(high))


def q6_k(b: torch.Tensor) -> Codes:
    # 16 sub-blocks of 16: [half, row of 32, which 16] -> sub-block half*8 + row*2 + which
    ql, qh = b[:, 0:128].reshape(-1, 2, 64), b[:, 128:192].reshape(-1, 2, 32)
    low = _nibbles(ql).unflatten(-1, (2, 32)).flatten(2, 3)  # rows: lo first 32, lo next 32, hi first, hi next
    high = _fields(qh, 2)  # [n, half, 4 rows, 32]
    codes = (low | (high << 4)).view(torch.int8) - 32
    scales = b[:, 192:208].view(torch.int8).float()
    return Codes(codes.view(-1, 16, 16), (_f16(b, 208) * scales)[:, :, None], None)


def _q3_scales(raw: torch.Tensor) -> torch.Tensor:
    """The sixteen 6-bit signed scales packed in 12 bytes (Q3_K) -> [n, 16] in -32..31."""
    aux = raw.contiguous().view(torch.int32)  # three little-endian words
    a0, a1, tmp = aux[:, 0], aux[:, 1], aux[:, 2]
    m2, m1 = 0x0F0F0F0F, 0x03030303
    words = torch.stack([(a0 & m2) | (((tmp >> 0) & m1) << 4), (a1 & m2) | (((tmp >> 2) & m1) << 4),
                         ((a0 >> 4) & m2) | (((tmp >> 4) & m1) << 4), ((a1 >> 4) & m2) | (((tmp >> 6) & m1) << 4)],
                        dim=1)
    return words.contiguous().view(torch.uint8).view(-1, 16).to(torch.int32) - 32


def q3_k(b: torch.Tensor) -> Codes:
    hmask, qs = b[:, 0:32], b[:, 32:96].reshape(-1, 2, 32)
    low = _fields(qs, 2)  # [n, half, shift, 32]
    high = _fields(hmask, 1).view(-1, 2, 4, 32)  # bit 4*half + shift of hmask[l]
    codes = low.view(torch.int8) - 4 * (1 - high.view(torch.int8))
    scales = _q3_scales(b[:, 96:108]).float()
    return Codes(codes.view(-1, 16, 16), (_f16(b, 108) * scales)[:, :, None], None)


def q2_k(b: torch.Tensor) -> Codes:
    scales, qs = b[:, 0:16], b[:, 16:80].reshape(-1, 2, 32)
    codes = _fields(qs, 2)  # [n, half, shift, 32]
    sc, mins = (scales & 0x0F).float(), (scales >> 4).float()
    return Codes(codes.view(-1, 16, 16), (_f16(b, 80) * sc)[:, :, None], (_f16(b, 82) * mins)[:, :, None])


DECODERS = {"Q8_0": q8_0, "Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1,
            "Q2_K": q2_k, "Q3_K": q3_k, "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}


def _exact_in(dtype: torch.dtype, type_name: str) -> bool:
    """Whether scaling the codes in `dtype` itself rounds each value once, as float32-then-cast does.

    float32: always (see the module docstring). fp16: the 32-value formats
    without an offset, whose scale is the stored fp16 `d` and whose codes are
    small integers: `d * q` is computed in float and rounded once to fp16.
    """
    return dtype == torch.float32 or (dtype == torch.float16 and type_name in ("Q8_0", "Q4_0", "Q5_0"))


def _chunk_blocks(type_name: str, n_blocks: int, device: torch.device, dtype: torch.dtype) -> int:
    """How many blocks `dequantize` decodes at a time.

    On the CPU, a chunk of about CPU_CHUNK_VALUES values: its codes, float32
    values and output stay in the core's cache between the passes that
    decode and scale them, instead of each pass streaming the whole weight
    through memory (with the in-place passes below, Q8_0 to bf16 went from 43
    to 15 ms for an 8960x1536 weight on this project's Xeon). Q8_0 through a
    work buffer takes an eighth of that: its codes are a view of the blocks,
    so there are no per-chunk decode ops to amortise, and at 128K values its
    codes, work and output (0.9 MB) fit a core's L2, where its three passes
    run (10.5 -> 8.5 ms for the same weight in bf16; the K-quants, whose
    decode is a dozen small ops per chunk, are slower with smaller chunks).
    On other devices one chunk: a kernel launch per chunk would cost more.
    """
    if device.type != "cpu":
        return max(n_blocks, 1)
    values = CPU_CHUNK_VALUES
    if type_name == "Q8_0" and not _in_place(type_name, dtype, device):
        values //= 8
    return max(1, values // BLOCKS[type_name][0])


def _in_place(type_name: str, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether `dequantize` computes the values in `dtype` itself rather than in a float32 work buffer.

    Only where that is exact (`_exact_in`), and not in half precision on the CPU, whose half arithmetic
    converts to float32 and back per operation: there float32 work and one cast cost 0.7 ms per million
    values against 1.2 ms.
    """
    return _exact_in(dtype, type_name) and (dtype == torch.float32 or device.type != "cpu")


def work_numel(type_name: str, dtype: torch.dtype, numel: int, device: torch.device) -> int:
    """The float32 work buffer `dequantize` needs for a tensor of `numel` values (0: none, see `_in_place`)."""
    device = torch.device(device)
    if type_name in FLOAT_TYPES or _in_place(type_name, dtype, device):
        return 0
    per_block = BLOCKS[type_name][0]
    return min(numel, _chunk_blocks(type_name, numel // per_block, device, dtype) * per_block)


def _traced(codes: Codes, dtype: torch.dtype) -> torch.Tensor:
    """The same values without in-place steps, for torch.compile to fuse into one kernel."""
    values = codes.codes.float() * codes.scale
    return (values if codes.offset is None else values - codes.offset).to(dtype)


def _scale_into(decoded: Codes, result: torch.Tensor, work: torch.Tensor | None) -> None:
    """Write `scale * codes - offset` of some blocks into `result` (1-D), through float32 `work` when given."""
    codes, scale, offset = decoded
    values = (result if work is None else work[:result.numel()]).view(codes.shape)
    if offset is None and values.device.type != "cpu":  # one pass: the codes promote inside the multiply
        torch.mul(codes, scale.to(values.dtype), out=values)
    else:
        # On the CPU two same-dtype passes over a chunk in the cache beat one mixed-dtype multiply (integer
        # codes times float scales), which its kernels do not vectorise: 0.5 against 0.8 ms per million values.
        values.copy_(codes)  # small integers: exact in every float dtype
        values.mul_(scale.to(values.dtype))  # in place and in numpy's order: (d * sc) * q, then - dmin * m
        if offset is not None:
            values.sub_(offset.to(values.dtype))
    if work is not None:
        result.copy_(values.view(-1))


def dequantize(raw: torch.Tensor, type_name: str, shape: tuple[int, ...], dtype: torch.dtype,
               out: torch.Tensor | None = None, work: torch.Tensor | None = None) -> torch.Tensor:
    """Raw GGUF bytes (uint8, any shape) of a tensor of `shape` -> dense `dtype` tensor.

    Every value equals the float32 result cast to `dtype` (one rounding).
    `out` (`dtype`, at least the tensor's size) and `work` (float32, at least
    `work_numel(...)`, used when `dtype` cannot compute the values exactly
    itself), each contiguous, let a caller reuse buffers across layers; the
    result is then a view of `out`.
    """
    numel = math.prod(shape)
    if type_name in FLOAT_TYPES:
        stored = raw.contiguous().view(FLOAT_TYPES[type_name]).view(shape)
        return stored.to(dtype) if out is None else out.view(-1)[:numel].view(shape).copy_(stored)
    per_block, block_bytes = BLOCKS[type_name]
    blocks = raw.reshape(-1, block_bytes)
    if torch.compiler.is_compiling():
        return _traced(DECODERS[type_name](blocks), dtype).view(shape)
    result = torch.empty(numel, dtype=dtype, device=raw.device) if out is None else out.view(-1)[:numel]
    needed = work_numel(type_name, dtype, numel, raw.device)
    if not needed:
        work = None
    elif work is None:
        work = torch.empty(needed, device=raw.device)
    elif work.numel() < needed:
        raise ValueError(f"dequantize: a work buffer of {work.numel()} values for {type_name} to {dtype}; "
                         f"it needs work_numel(...) = {needed}")
    else:
        work = work.view(-1)
    step = _chunk_blocks(type_name, len(blocks), raw.device, dtype)
    # Q8_0's codes are a view of the blocks and its scales one small tensor: decoded once, sliced per chunk
    # (a decode per chunk cost 2.4 of its 13 ms for an 8960x1536 weight in bf16)
    whole = DECODERS[type_name](blocks) if type_name == "Q8_0" else None
    for first in range(0, len(blocks), step):
        part = (DECODERS[type_name](blocks[first:first + step]) if whole is None
                else Codes(*(None if x is None else x[first:first + step] for x in whole)))
        _scale_into(part, result[first * per_block:(first + len(part.codes)) * per_block], work)
    return result.view(shape)
