"""How many parameters does ComfyUI patch for each LoRA layout of tests/lora_files.py? (the tests' reference)

    UNIWORLD_COMFYUI_DIR=/path/to/ComfyUI /path/to/ComfyUI/venv/bin/python bench/comfyui_lora_count.py

Writes the tests' tiny DiT (plain Wan2.1 T2V keys, which ComfyUI 0.3.x loads as a Wan model) and each
LoRA file, loads them with comfy.sd.load_diffusion_model and comfy.sd.load_lora_for_models, and prints the
number of patched model parameters and the keys ComfyUI reports as not loaded.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from lora_files import BUILDERS  # noqa: E402
from tiny_models import CFG, tiny_dit  # noqa: E402


class _NotLoaded(logging.Handler):
    def __init__(self):
        super().__init__()
        self.keys = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("lora key not loaded: "):
            self.keys.append(message.removeprefix("lora key not loaded: "))


def main() -> None:
    comfy_dir = os.environ.get("UNIWORLD_COMFYUI_DIR")
    if not comfy_dir:
        sys.exit("set UNIWORLD_COMFYUI_DIR to a ComfyUI checkout and run with its Python")
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.sd

    # the tests' DiT, with the text and time widths ComfyUI's Wan model assumes (the LoRAs do not touch them)
    model = tiny_dit(cfg=replace(CFG, text_dim=4096, freq_dim=256))
    plain = {k: v for k, v in model.state_dict().items() if not k.startswith(("fourier_embedding", "learnable_proj"))}
    with TemporaryDirectory() as tmp:
        save_file(plain, f"{tmp}/dit.safetensors")
        patcher = comfy.sd.load_diffusion_model(f"{tmp}/dit.safetensors")
        for layout, build in BUILDERS.items():
            save_file(build(model)[0], f"{tmp}/{layout}.safetensors")
            handler = _NotLoaded()
            logging.getLogger().addHandler(handler)
            patched, _ = comfy.sd.load_lora_for_models(patcher, None, load_file(f"{tmp}/{layout}.safetensors"),
                                                       1.0, 0.0)
            logging.getLogger().removeHandler(handler)
            count = len(patched.patches)
            print(f"{layout}: {count} parameters patched; not loaded: {handler.keys or 'none'}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
