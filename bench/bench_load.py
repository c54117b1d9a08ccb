"""Peak RSS and seconds to load a DiT checkpoint: our registry vs the naive path.

The naive path is what most scripts do: build the model normally (random fp32
init), `safetensors.torch.load_file`, `load_state_dict`, cast. Ours builds on
the meta device and streams tensors from the memory-mapped file. Each load
runs in a fresh process; after loading, every weight is read once (so
memory-mapped tensors count as resident), and the peak is that process's
VmHWM minus its RSS before loading.

    python bench/bench_load.py --config 1.3B
    python bench/bench_load.py --config 14B --layers 8
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

CHILD = """
import sys, time, torch
from dataclasses import replace
from uniworld_core.model import DIT_PRESETS
def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
mode, path, preset, layers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open("/proc/self/clear_refs", "w").write("5")
before = kib("VmRSS")
start = time.perf_counter()
if mode == "ours":
    from uniworld_core.weights import load
    model = load(path, "dit", dtype=torch.bfloat16).model
else:
    from safetensors.torch import load_file
    from uniworld_core.model import WanDiT
    model = WanDiT(replace(DIT_PRESETS[preset], num_layers=layers))
    model.load_state_dict(load_file(path))
    model = model.to(torch.bfloat16)
# read every weight once, so memory-mapped tensors are counted as resident too
checksum = sum(float(p.sum()) for p in model.parameters())
seconds = time.perf_counter() - start
print(seconds, (kib("VmHWM") - before) * 1024, sum(p.numel() for p in model.parameters()))
"""


def write_checkpoint(path: Path, preset: str, layers: int) -> int:
    cfg = replace(DIT_PRESETS[preset], num_layers=layers)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanDiT(cfg).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16) for k, s in shapes.items()}
    save_file(state, str(path))
    return path.stat().st_size


def measure(mode: str, path: Path, preset: str, layers: int) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), preset, str(layers)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=["1.3B", "14B"], default="1.3B")
    parser.add_argument("--layers", type=int, help="fewer blocks than the real model (RAM/disk)")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    layers = args.layers or DIT_PRESETS[args.config].num_layers
    path = Path(args.dir) / f"bench_{args.config}_{layers}l_bf16.safetensors"
    started = time.perf_counter()
    size = write_checkpoint(path, args.config, layers)
    print(f"wrote {path.name}: {size / 2**30:.2f} GiB in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    try:
        print("| checkpoint | file | loader | seconds | peak RSS | peak / file |")
        print("|---|---|---|---|---|---|")
        for mode in ("ours", "naive"):
            seconds, peak = measure(mode, path, args.config, layers)
            print(f"| {args.config} config, {layers} layers, bf16 | {size / 2**30:.2f} GiB | {mode} | "
                  f"{seconds:.1f} | {peak / 2**30:.2f} GiB | {peak / size:.2f} |")
    finally:
        path.unlink()


if __name__ == "__main__":
    main()
