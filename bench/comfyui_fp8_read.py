"""Does ComfyUI read our fp8 files as we do? Load one with `comfy.sd.load_diffusion_model` and compare.

Run with the Python of a ComfyUI installation (its venv), from the repo root:

    UNIWORLD_COMFYUI_DIR=/path/to/ComfyUI /path/to/ComfyUI/venv/bin/python bench/comfyui_fp8_read.py

A small Wan2.1 DiT (bf16, random weights at the scale of trained ones) is
written, quantised by `python -m uniworld_core quantize --type fp8_e4m3fn`,
and loaded by ComfyUI and by uniworld_core. For every Linear layer the
weight each program will compute with (fp8 value x scale) is compared with
the bf16 original and between the two programs. The same is done for a file
in the layout this project wrote before (six Linear layers left in bf16
without a scale), to show what ComfyUI made of it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from safetensors.torch import load_file, save_file  # noqa: E402

from uniworld_core import load, quantize_file  # noqa: E402
from uniworld_core.model import DiTConfig, WanDiT  # noqa: E402

OLD_BF16_LAYERS = ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
                   "time_projection.1", "head.head")


def comfy_linears(path: Path) -> dict[str, torch.Tensor]:
    """The weight ComfyUI computes with for each Linear of the file: its stored value times its scale."""
    comfy_dir = os.environ.get("UNIWORLD_COMFYUI_DIR")
    if not comfy_dir:
        sys.exit("set UNIWORLD_COMFYUI_DIR to a ComfyUI checkout and run with its Python")
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()  # as ComfyUI's main.py does, so --cpu is read
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model(str(path))
    out = {}
    for name, module in patcher.model.diffusion_model.named_modules():
        if isinstance(module, torch.nn.Linear):
            scale = getattr(module, "scale_weight", None)
            scale = torch.ones(()) if scale is None else scale.float().cpu()
            out[name] = module.weight.float().cpu() * scale
    return out


def our_linears(path: Path) -> dict[str, torch.Tensor]:
    model = load(path, "dit").model
    return {name: (module.dequantize(torch.float32) if hasattr(module, "dequantize") else module.weight.float())
            for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def errors(read: dict[str, torch.Tensor], original: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative RMS error of each layer's weight against the bf16 original."""
    return {n: ((w - original[n + ".weight"].float()).norm() / original[n + ".weight"].float().norm()).item()
            for n, w in read.items()}


def old_layout(new_file: Path, original: dict[str, torch.Tensor], out: Path) -> Path:
    state = load_file(str(new_file))
    for layer in OLD_BF16_LAYERS:
        state[layer + ".weight"] = original[layer + ".weight"]
        state.pop(layer + ".scale_weight")
    save_file(state, str(out))
    return out


def main() -> None:
    cfg = DiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, freq_dim=256, text_dim=4096, flashi2v=False)
    torch.manual_seed(0)
    model = WanDiT(cfg)
    for param in model.parameters():  # zero-initialised outputs get trained-like values
        if not param.any():
            param.data.normal_(0, 0.02)
    original = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    with TemporaryDirectory() as tmp:
        bf16 = Path(tmp) / "dit_bf16.safetensors"
        save_file(original, str(bf16))
        fp8 = quantize_file(bf16, Path(tmp) / "dit_fp8_e4m3fn.safetensors", "fp8_e4m3fn")
        old = old_layout(fp8, original, Path(tmp) / "dit_fp8_old_layout.safetensors")
        ours, comfy, comfy_old = our_linears(fp8), comfy_linears(fp8), comfy_linears(old)
    same = max((ours[n] - comfy[n]).abs().max().item() for n in ours)
    print(f"fp8 file: {len(comfy)} Linear layers in ComfyUI, {len(ours)} in uniworld_core; "
          f"largest difference between the two readings: {same:.3g}")
    new_err, old_err = errors(comfy, original), errors(comfy_old, original)
    print("| layer | ComfyUI, this layout | ComfyUI, old layout (bf16 without scale) |\n|---|---|---|")
    for name in sorted(new_err, key=lambda n: -old_err[n])[:8]:
        print(f"| {name} | {new_err[name]:.4f} | {old_err[name]:.4f} |")
    print(f"| worst layer | {max(new_err.values()):.4f} | {max(old_err.values()):.4f} |")


if __name__ == "__main__":
    main()
