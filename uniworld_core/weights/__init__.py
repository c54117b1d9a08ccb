"""Weight files: containers, detection, key layouts, the loader registry, LoRA, writers.

`containers` reads safetensors (single or sharded), GGUF and `.pt` (only with
`weights_only=True`) lazily; `detect` says what a file is from its tensors;
`keymaps` maps official / ComfyUI / diffusers names; `registry` turns any
supported file into a ready model (`load`, for the DiT, VAE, umT5, VLM and
adapter), and inspects and converts; `umt5` and `vlm` are the text-encoder
files; `lora` reads and applies LoRAs; `quantize` writes GGUF and fp8 files.
May import `model`, `quant` and the basics; not its peers `sampling` and `memory`.
"""

from .containers import open_weights
from .detect import identify
from .lora import DiffPatch, LoraPatch, LoraPatches, applied, merge_patches, read_lora
from .quantize import OUR_TYPES, quantize_file
from .registry import (
    CONTINUATION_KEY,
    Loaded,
    convert_file,
    inspect_file,
    load,
    load_dit,
    load_vae,
    official_state,
    peek_config,
    trained_for_continuation,
)
from .vlm import QWEN25VL_CHAT_TEMPLATE, is_single_file_vlm, load_adapter, load_vlm

__all__ = [
    "open_weights", "identify", "applied", "merge_patches", "read_lora", "OUR_TYPES", "quantize_file",
    "Loaded", "convert_file", "inspect_file", "load", "load_dit", "load_vae", "official_state", "peek_config",
    "LoraPatch", "QWEN25VL_CHAT_TEMPLATE", "is_single_file_vlm", "load_adapter", "load_vlm", "DiffPatch",
    "LoraPatches", "trained_for_continuation", "CONTINUATION_KEY",
]
