"""One set-up per encoder: from files to a ready `Conditioner`.

The nodes, the command line, the miniature preset and training all build
their text encoders here, so the VLM + adapter and the umT5 paths are written
once. Files are read through the loader registry (weights.registry.load).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..weights.registry import load
from .conditioner import Conditioner
from .umt5_encoder import UMT5TextEncoder
from .vlm_encoder import VLMEncoder, encoder_settings


def vlm_encoder(vlm: str | Path, adapter: str | Path | None, tokenizer: str | Path | None = None,
                dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                offload: bool = False, mode: str = "official") -> VLMEncoder:
    """Qwen2.5-VL (folder or single file) + the encoder adapter, run by the official protocol by default.

    tokenizer: a tokenizer folder for a single-file VLM (a folder brings its own).
    offload: the VLM waits in CPU RAM between encodings and visits `device` for each.
    adapter None: an encoder for `features` only (what training caches).
    """
    loaded = load(vlm, "vlm", "cpu", dtype, tokenizer=tokenizer)
    head = load(adapter, "vlm_adapter").model if adapter is not None else None
    return VLMEncoder(loaded.model, loaded.processor, head, mode, device, offload, **encoder_settings(vlm))


def vlm_conditioner(vlm: str | Path, adapter: str | Path, tokenizer: str | Path | None = None,
                    dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                    offload: bool = False, mode: str = "official") -> Conditioner:
    """A Conditioner over `vlm_encoder(...)` (styles, negatives, cache)."""
    return Conditioner(vlm_encoder(vlm, adapter, tokenizer, dtype, device, offload, mode))


def umt5_conditioner(source: str | Path, tokenizer: str | Path | None = None,
                     dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                     offload: bool = False) -> Conditioner:
    """umT5 (official .pth, Hugging Face folder or ComfyUI file) for FlashI2V-1.3B, as a Conditioner."""
    loaded = load(source, "umt5", "cpu", dtype, tokenizer=tokenizer)
    if loaded.processor is None:
        raise CheckpointError(f"the single umT5 file '{Path(source).name}' with no tokenizer",
                              "a tokenizer folder as well (spiece.model or tokenizer.json)",
                              "Pass the google/umt5-xxl tokenizer folder that ships with Wan2.1.")
    return Conditioner(UMT5TextEncoder(loaded.model, loaded.processor, compute=device, offload=offload))
