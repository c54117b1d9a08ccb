"""Peak RSS and seconds per training step on the CPU, per config and trainable set.

    python bench/bench_train.py
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import sys, time, torch
from dataclasses import replace
sys.path.insert(0, ".")
from training.config import TrainConfig
from training.trainer import Trainer
from uniworld_core.model import DiTConfig
from uniworld_core.model import WanDiT
def kib(f):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(f + ":"))
dim, ffn, heads, layers, grid, mode, ckpt = sys.argv[1:8]
cfg = DiTConfig(dim=int(dim), ffn_dim=int(ffn), num_heads=int(heads), num_layers=int(layers), text_dim=4096)
grid = [int(v) for v in grid.split(",")]
torch.manual_seed(0)
open("/proc/self/clear_refs", "w").write("5")
before = kib("VmRSS")
dit = WanDiT(cfg)
trainer = Trainer(dit, TrainConfig(mode=mode, gradient_checkpointing=ckpt == "1", lora_rank=16))
batch = {"latents": torch.randn(1, 16, *grid), "features": torch.randn(1, 512, 4096),
         "empty_features": torch.zeros(1, 512, 4096)}
trainer.train_step(batch)
start = time.perf_counter()
trainer.train_step(batch)
print(time.perf_counter() - start, (kib("VmHWM") - before) * 1024)
"""

RUNS = [("tiny", (64, 128, 2, 2), "3,16,16"), ("mid", (1536, 8960, 12, 2), "5,30,52")]


def main() -> None:
    print("| config | latent grid | mode | grad. checkpointing | s / step | peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, (dim, ffn, heads, layers), grid in RUNS:
        for mode in ("lora", "full"):
            for ckpt in ("0", "1"):
                out = subprocess.run([sys.executable, "-c", CHILD, str(dim), str(ffn), str(heads), str(layers), grid,
                                      mode, ckpt], capture_output=True, text=True, check=True).stdout.split()
                print(f"| {name} ({layers} blocks, dim {dim}) | {grid} | {mode} | {'on' if ckpt == '1' else 'off'} "
                      f"| {float(out[0]):.2f} | {int(out[1]) / 2**20:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
