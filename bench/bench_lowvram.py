"""Memory, time and error per DiT step: resident, block swap, fp8 and GGUF types, in one run.

A random mid-size DiT (1.3B width, few blocks) is written once in fp32 and
re-written in each storage type with our quantize tool; every variant then
runs in a fresh process: load, one warm-up forward, one timed forward (the
cond+uncond batch of one sampling step). Reported: peak RSS of the process
above its start (VmHWM), seconds per step, weight bytes held by the model,
and the output's max-abs error relative to the fp32 model.

    python bench/bench_lowvram.py --layers 4
    python bench/bench_lowvram.py --device cuda --layers 40 --dim 5120 ...   (on a GPU)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from uniworld_core.model import DIT_PRESETS, WanDiT
from uniworld_core.weights import quantize_file

CHILD = """
import sys, time, torch
from uniworld_core import load, place_dit
def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
path, swap, grid, out = sys.argv[1], int(sys.argv[2]), [int(v) for v in sys.argv[3].split(",")], sys.argv[4]
torch.manual_seed(0)
before = kib("VmRSS")
model = load(path, "dit", dtype=torch.float32).model
if swap:
    place_dit(model, "cpu", blocks_to_swap=swap, prefetch=1, latent_grid=tuple(grid))
held = sum(p.numel() * p.element_size() for p in model.parameters())
x = torch.randn(2, 16, *grid); t = torch.tensor([700.0, 700.0])
ctx = torch.randn(2, 512, model.cfg.text_dim); ff = torch.randn_like(x)
with torch.no_grad():
    model(x, t, ctx, ff)
    start = time.perf_counter()
    y = model(x, t, ctx, ff)
    seconds = time.perf_counter() - start
torch.save(y, out)
print(seconds, (kib("VmHWM") - before) * 1024, held)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--grid", default="5,30,52", help="latent frames,height,width")
    parser.add_argument("--types", default="fp32,swap,fp8_e4m3fn,Q8_0,Q6_K,Q5_K,Q4_K,Q4_0")
    args = parser.parse_args()
    cfg = replace(DIT_PRESETS["1.3B"], num_layers=args.layers)
    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    model = WanDiT(cfg)
    with torch.no_grad():  # wake the zero-initialised FlashI2V outputs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    source = folder / "dit_fp32.safetensors"
    save_file(model.state_dict(), str(source))
    del model
    rows, reference = [], None
    for kind in args.types.split(","):
        started = time.perf_counter()
        if kind in ("fp32", "swap"):
            path, swap = source, (args.layers if kind == "swap" else 0)
        else:
            suffix = "safetensors" if kind.startswith("fp8") else "gguf"
            path, swap = quantize_file(source, folder / f"dit_{kind}.{suffix}", kind), 0
        write_s = time.perf_counter() - started
        out = folder / f"out_{kind}.pt"
        seconds, peak, held = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(swap), args.grid, str(out)],
            capture_output=True, text=True, check=True).stdout.split()
        y = torch.load(out, weights_only=True)
        reference = y if reference is None else reference
        error = ((y - reference).abs().max() / reference.abs().max()).item()
        names = {"fp32": "resident fp32", "swap": f"block swap {args.layers}/{args.layers} (CPU copies)"}
        label = names.get(kind, kind)
        rows.append(f"| {label} | {path.stat().st_size / 2**20:.0f} MiB | {int(held) / 2**20:.0f} MiB | "
                    f"{int(peak) / 2**20:.0f} MiB | {float(seconds):.2f} | {error:.4f} | {write_s:.0f} s |")
        print(rows[-1], file=sys.stderr)
    tokens = eval(args.grid.replace(",", "*")) // 4  # noqa: S307 (a literal product)
    print(f"Config: 1.3B width (dim {cfg.dim}, ffn {cfg.ffn_dim}), {args.layers} blocks, latent grid "
          f"{args.grid} ({tokens} tokens), cond+uncond batch, CPU fp32 compute.\n")
    print("| storage | file | weights held | peak RSS | s / step | rel. error vs fp32 | write time |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
