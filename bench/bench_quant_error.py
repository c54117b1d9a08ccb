"""Error of every storage type: weight reconstruction and DiT output, against fp32.

    python bench/bench_quant_error.py

Weights: a [64, 4096] matrix with per-column scales from 0.05 to 4 (like
real projections, whose columns differ in range); relative RMS error after a
round trip through the type. DiT: a 2-block model of 256-wide layers (so the
K-quant types apply) with random weights, quantised with our tool and loaded
through the registry; max-abs output error relative to the fp32 model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from uniworld_core.model import DiTConfig, WanDiT
from uniworld_core.quant import BLOCKS, dequantize, quantize
from uniworld_core.weights import load, quantize_file

TYPES = ["F16", "Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "Q4_0", "fp8_e4m3fn", "fp8_e5m2"]
CFG = DiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, freq_dim=32, text_dim=64)


def weight_error(kind: str, x: torch.Tensor) -> float:
    if kind.startswith("fp8"):
        fp8 = getattr(torch, kind.replace("fp8_", "float8_"))
        scale = x.abs().max() / torch.finfo(fp8).max
        back = (x / scale).to(fp8).float() * scale
    else:
        raw = torch.from_numpy(np.ascontiguousarray(quantize(x, kind)).view(np.uint8))
        back = dequantize(raw, kind, tuple(x.shape), torch.float32)
    return ((back - x).pow(2).mean().sqrt() / x.std()).item()


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 4096) * torch.linspace(0.05, 4, 4096)
    folder = Path(tempfile.mkdtemp())
    model = WanDiT(CFG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_file(model.state_dict(), str(folder / "dit.safetensors"))
    gen = torch.Generator().manual_seed(1)
    inputs = (torch.randn(1, 16, 3, 8, 12, generator=gen), torch.tensor([600.0]),
              torch.randn(1, 32, CFG.text_dim, generator=gen), torch.randn(1, 16, 3, 8, 12, generator=gen))
    with torch.no_grad():
        reference = model(*inputs)
    print("| type | bits / weight | weight rel. RMS error | DiT output rel. max error |")
    print("|---|---|---|---|")
    for kind in TYPES:
        suffix = "safetensors" if kind.startswith("fp8") else "gguf"
        loaded = load(quantize_file(folder / "dit.safetensors", folder / f"dit_{kind}.{suffix}", kind), "dit")
        with torch.no_grad():
            out = loaded.model(*inputs)
        bits = 8.0 if kind.startswith("fp8") else 8 * BLOCKS[kind][1] / BLOCKS[kind][0]
        error = ((out - reference).abs().max() / reference.abs().max()).item()
        print(f"| {kind} | {bits:.2f} | {weight_error(kind, x):.4f} | {error:.4f} |")


if __name__ == "__main__":
    main()
