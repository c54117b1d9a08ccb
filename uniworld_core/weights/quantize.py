"""Write a DiT as GGUF (ggml block types) or as fp8 safetensors.

Keep-in-higher-precision rules, as the GGUF ecosystem uses them for DiTs:
1-D tensors (biases, norms) and `modulation` stay F32; the embeddings
(patch, text, time, Fourier), the learnable projection and the head stay F16;
only the attention and FFN matrices of the blocks are quantised. 5-D tensors
(the patch embedding) do not fit GGUF's 4 dimensions: they are stored
flattened, with their shape in `comfy.gguf.orig_shape.<name>` (city96's
ComfyUI-GGUF convention), so both loaders read them back.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..quant.gguf_decode import BLOCKS
from .containers import GGUF_CONTINUATION_KEY, ORIG_SHAPE_KEY, carried_metadata, open_weights
from .detect import identify
from .registry import check_rewritable

QUANTISED = re.compile(r"^blocks\.\d+\.(self_attn|cross_attn)\.[qkvo]\.weight$|^blocks\.\d+\.ffn\.[02]\.weight$")
GGUF_TYPES = [t for t in BLOCKS if t not in ("F32", "BF16")]
OUR_TYPES = GGUF_TYPES + ["fp8_e4m3fn", "fp8_e5m2"]


def storage_type(name: str, tensor: torch.Tensor, wanted: str) -> str:
    """The GGUF type a tensor is written as under the keep-in-higher-precision rules."""
    if tensor.ndim == 1 or "modulation" in name or "norm" in name:
        return "F32"
    if not QUANTISED.match(name):
        return "F16"
    block = BLOCKS[wanted][0]
    return wanted if tensor.shape[-1] % block == 0 else "F16"


def _source(path):
    wf = open_weights(path)
    ident = identify(wf)
    if ident.kind not in ("flashi2v_dit", "wan_t2v_dit"):
        raise CheckpointError(f"'{wf.path.name}' is a {ident.kind_name}", "a FlashI2V / Wan2.1 DiT to quantise")
    return wf, ident


def write_gguf(src, out, type_name: str) -> Path:
    """Quantise a DiT file to GGUF (`general.architecture` 'wan', official tensor names)."""
    import gguf
    import numpy as np

    from ..quant.gguf_encode import quantize

    wf, ident = _source(src)
    writer = gguf.GGUFWriter(str(out), "wan")
    writer.add_file_type(0)
    if carried_metadata(wf):
        writer.add_string(GGUF_CONTINUATION_KEY, "true")
    for name, src_name in ident.names.items():
        if name.endswith((".scale_weight", ".scale_input")) or name == "scaled_fp8":
            continue
        tensor = wf.dense(src_name, torch.float32)
        kind = storage_type(name, tensor, type_name)
        if tensor.ndim > 4:
            writer.add_array(ORIG_SHAPE_KEY + name, list(tensor.shape))
            tensor = tensor.reshape(tensor.shape[0], -1)
        if kind == "F32":
            writer.add_tensor(name, tensor.numpy().astype(np.float32))
        elif kind == "F16":
            writer.add_tensor(name, tensor.numpy().astype(np.float16))
        else:
            raw = quantize(tensor.reshape(-1, tensor.shape[-1]), kind)
            writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(out)


def write_fp8(src, out, fp8: torch.dtype = torch.float8_e4m3fn) -> Path:
    """Every Linear weight as fp8 with its per-tensor `scale_weight`, the rest bf16/fp32 (ComfyUI's scaled fp8).

    ComfyUI's loader sees the `scaled_fp8` marker and builds *every* Linear of
    the model in fp8, reading a missing `scale_weight` as 1.0; a Linear kept in
    bf16 would be cast to fp8 unscaled. So the file follows ComfyUI's own
    scaled-fp8 files: all Linear weights (the embeddings and the head
    included) are fp8 at their own scale; convolutions, norms, biases and
    modulations stay in high precision. The two-element marker tells ComfyUI
    to dequantise the weights rather than quantise activations to fp8.
    """
    wf, ident = _source(src)
    top = torch.finfo(fp8).max
    state = {"scaled_fp8": torch.zeros(2, dtype=fp8)}
    for name, src_name in ident.names.items():
        if name.endswith((".scale_weight", ".scale_input")) or name == "scaled_fp8":
            continue
        tensor = wf.dense(src_name, torch.float32)
        if name.endswith(".weight") and tensor.ndim == 2:  # a Linear: ComfyUI makes it fp8 whatever we write
            scale = (tensor.abs().max() / top).clamp_min(1e-12)
            state[name] = (tensor / scale).clamp(-top, top).to(fp8)
            state[name.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
        elif storage_type(name, tensor, "Q8_0") == "F32":
            state[name] = tensor
        else:
            state[name] = tensor.to(torch.bfloat16)
    metadata = {"format": "pt", **carried_metadata(wf)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata=metadata)
    return Path(out)


def quantize_file(src, out, type_name: str) -> Path:
    """`python -m uniworld_core quantize`: GGUF for ggml types, safetensors for fp8."""
    if type_name not in OUR_TYPES:
        raise CheckpointError(f"the quantisation type '{type_name}'", f"one of {', '.join(OUR_TYPES)}")
    check_rewritable(src, out)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if type_name.startswith("fp8"):
        return write_fp8(src, out, getattr(torch, type_name.replace("fp8_", "float8_")))
    return write_gguf(src, out, type_name)
