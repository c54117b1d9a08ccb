"""Memory, time and error per DiT step: resident, block swap, fp8 and GGUF types, in one run.

A random DiT (a preset's width, few blocks) is written once in fp32 and
re-written in each storage type with our quantize tool; every variant then
runs in a fresh process: load, place on the device (block swap for the
`+swap` variants), one warm-up forward, then timed forwards (the cond+uncond
batch of one sampling step). Reported: seconds per step (median), peak
memory (CPU: the process's VmHWM above its start; CUDA: peak allocated VRAM),
the weight bytes on the device, and the output's relative RMS error against
the first variant's output (`fp32` by default).

Variants: `fp32` (dense, fp32 compute, the reference), `dense` (the fp32 file
loaded in `--dtype`), a quantisation type (`fp8_e4m3fn`, `Q8_0`, `Q4_K`, ...),
`fp8_e4m3fn+mm` (fp8 weights multiplied on the fp8 tensor cores,
`use_fp8_matmul`), and any of these with `+swap` (the first `--swap-blocks`
blocks live on the CPU and are streamed in, `place_dit(blocks_to_swap=...)`).

    python bench/bench_lowvram.py --layers 4
    python bench/bench_lowvram.py --device cuda --preset 14B --layers 4 --grid 21,60,104 --dtype bf16 \\
        --types fp32,dense,dense+swap,Q4_K,Q4_K+swap,fp8_e4m3fn,fp8_e4m3fn+mm
"""

from __future__ import annotations

import argparse
import math
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
import statistics, sys, time, torch
from uniworld_core import load, place_dit
from uniworld_core.quant import use_fp8_matmul
def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
path, swap, grid, out, device, dtype, mm, rounds = sys.argv[1:9]
swap, grid, dtype, rounds = int(swap), [int(v) for v in grid.split(",")], getattr(torch, dtype), int(rounds)
cuda = device.startswith("cuda")
def sync():
    if cuda:
        torch.cuda.synchronize()
torch.manual_seed(0)
before = kib("VmRSS")
model = load(path, "dit", dtype=dtype).model
place_dit(model, device, blocks_to_swap=swap, prefetch=1, latent_grid=tuple(grid))
if mm == "1":
    assert use_fp8_matmul(model, device=device) > 0, "no layer can use the fp8 matmul here"
held = torch.cuda.memory_allocated() if cuda else sum(p.numel() * p.element_size() for p in model.parameters())
x = torch.randn(2, 16, *grid).to(device, dtype); t = torch.tensor([700.0, 700.0], device=device)
ctx = torch.randn(2, 512, model.cfg.text_dim).to(device, dtype); ff = torch.randn_like(x)
times = []
with torch.no_grad():
    model(x, t, ctx, ff)
    for _ in range(rounds):
        sync(); start = time.perf_counter()
        y = model(x, t, ctx, ff)
        sync(); times.append(time.perf_counter() - start)
torch.save(y.float().cpu(), out)
peak = torch.cuda.max_memory_allocated() if cuda else (kib("VmHWM") - before) * 1024
print(statistics.median(times), peak, held)
"""


def variant(kind: str, source: Path, folder: Path, layers: int, swap_blocks: int) -> tuple[Path, int, bool, str]:
    """(file, blocks to swap, fp8 matmul, seconds to write it) of one variant name."""
    base, swap = (kind[:-len("+swap")], swap_blocks or layers) if kind.endswith("+swap") else (kind, 0)
    if base == "swap":  # the old name of dense+swap
        base, swap = "dense", swap_blocks or layers
    base, mm = (base[:-len("+mm")], True) if base.endswith("+mm") else (base, False)
    if base in ("fp32", "dense"):
        return source, swap, mm, "0 s"
    started = time.perf_counter()
    suffix = "safetensors" if base.startswith("fp8") else "gguf"
    path = folder / f"dit_{base}.{suffix}"
    if not path.exists():
        quantize_file(source, path, base)
    return path, swap, mm, f"{time.perf_counter() - started:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="1.3B", choices=sorted(DIT_PRESETS))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--grid", default="5,30,52", help="latent frames,height,width")
    parser.add_argument("--types", default="fp32,swap,fp8_e4m3fn,Q8_0,Q6_K,Q5_K,Q4_K,Q4_0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="compute dtype of every variant but fp32")
    parser.add_argument("--swap-blocks", type=int, default=0, help="blocks the +swap variants stream (0 = all)")
    parser.add_argument("--rounds", type=int, default=1, help="timed forwards per variant (median)")
    args = parser.parse_args()
    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(args.dtype, args.dtype)
    cfg = replace(DIT_PRESETS[args.preset], num_layers=args.layers)
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
        path, swap, mm, write = variant(kind, source, folder, args.layers, args.swap_blocks)
        out = folder / "out.pt"
        compute = "float32" if kind.split("+")[0] == "fp32" else dtype
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(swap), args.grid, str(out), args.device, compute,
             "1" if mm else "0", str(args.rounds)], capture_output=True, text=True)
        if child.returncode != 0:  # one variant failing says why and leaves the others to run
            print(child.stderr[-3000:], file=sys.stderr)
            last = (child.stderr.strip().splitlines() or ["no message"])[-1]
            rows.append(f"| {kind} | {compute} | failed: {last} ||||| {write} |")
            continue
        seconds, peak, held = child.stdout.split()
        y = torch.load(out, weights_only=True)
        reference = y if reference is None else reference
        error = ((y - reference).square().mean().sqrt() / reference.square().mean().sqrt()).item()
        rows.append(f"| {kind} | {compute} | {path.stat().st_size / 2**20:.0f} MiB | {int(held) / 2**20:.0f} MiB | "
                    f"{int(peak) / 2**20:.0f} MiB | {float(seconds):.3f} | {error:.4f} | {write} |")
        print(rows[-1], file=sys.stderr, flush=True)
    tokens = math.prod(int(v) for v in args.grid.split(",")) // 4
    where = "peak VRAM" if args.device.startswith("cuda") else "peak RSS"
    print(f"Config: {args.preset} width (dim {cfg.dim}, ffn {cfg.ffn_dim}), {args.layers} blocks, latent grid "
          f"{args.grid} ({tokens} tokens), cond+uncond batch, device {args.device}, {args.rounds} timed round(s).\n")
    print(f"| storage | compute | file | weights on device | {where} | s / step | rel. RMS vs first | write time |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
