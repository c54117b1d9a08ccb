"""Several processes per generation: seconds per sampling step, and the cost model of docs/benchmarks.md.

    # the cost model (no device needed): communication against compute per step and process
    python bench/bench_parallel.py --cost-model
    # one sampling step (cond + uncond) of random weights, one process, then N (NCCL on CUDA, gloo on CPU)
    python bench/bench_parallel.py --config 14B --grid 21,90,160 --dtype bf16 --device cuda
    torchrun --nproc-per-node 8 bench/bench_parallel.py --config 14B --grid 21,90,160 --dtype bf16 --device cuda \
        --sequence 8
    torchrun --nproc-per-node 8 bench/bench_parallel.py ... --sequence 4 --cfg-parallel
    torchrun --nproc-per-node 8 bench/bench_parallel.py ... --sequence 8 --fsdp

Every process times the same `sample(..., steps=1)` call (what one step of `generate` costs) after a
warm-up; process 0 prints a markdown row with the median, the peak memory of the busiest process and
the cost model's bytes for the same layout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch
import torch.distributed as dist

from uniworld_core import parallel as P
from uniworld_core.device import DTYPES, cast_model
from uniworld_core.model import DIT_PRESETS, DiTConfig, WanDiT
from uniworld_core.sampling import SamplerSettings, sample

CONFIGS = {"tiny": DIT_PRESETS["tiny"], "mid": DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=4),
           "1.3B": DIT_PRESETS["1.3B"], "14B": DIT_PRESETS["14B"]}
GRIDS = {"480p": (21, 60, 104), "720p": (21, 90, 160)}  # 81 frames at 832x480 and 1280x720
OFFICIAL_720P_S = {1: 1491, 2: 754, 4: 404, 8: 239}  # Wan2.1 14B I2V 720p, FSDP + Ulysses (issue #24)


def tokens_of(cfg: DiTConfig, grid: tuple[int, int, int]) -> int:
    return (grid[0] // cfg.patch_size[0]) * (grid[1] // cfg.patch_size[1]) * (grid[2] // cfg.patch_size[2])


def forward_flops(cfg: DiTConfig, tokens: int, context: int, sequence: int = 1) -> float:
    """Matmul FLOPs (2 per multiply-add) of one DiT forward for one sample, done by one of `sequence` processes.

    Token work (projections, FFN, self- and cross-attention scores) splits over the processes; the
    context's cross-attention keys and values are computed by every process.
    """
    dim, ffn = cfg.dim, cfg.ffn_dim
    per_token = 2 * dim * dim * 6 + 2 * 2 * tokens * dim + 2 * 2 * context * dim + 2 * dim * ffn * 2
    return cfg.num_layers * (tokens / sequence * per_token + 2 * context * dim * dim * 2)


def step_cost(cfg: DiTConfig, grid, processes: int, sequence: int, cfg_parallel: bool, fsdp: bool,
              context: int = 512, dtype_bytes: int = 2) -> dict:
    """FLOPs and bytes sent per process for one sampling step (both guidance branches)."""
    tokens = tokens_of(cfg, grid)
    batch = 1 if cfg_parallel else 2  # the branches a process runs (batched in one forward)
    share = -(-tokens // sequence)
    ulysses = cfg.num_heads % sequence == 0
    per_layer = (4 * share * cfg.dim if ulysses else 2 * tokens * cfg.dim) * (sequence - 1) / sequence
    sequence_bytes = cfg.num_layers * batch * per_layer * dtype_bytes
    block = sum(p.numel() for p in _meta_block(cfg).parameters()) * dtype_bytes
    fsdp_bytes = (processes - 1) / processes * block * cfg.num_layers if fsdp else 0
    return {"flops": batch * forward_flops(cfg, tokens, context, sequence), "sequence_bytes": sequence_bytes,
            "fsdp_bytes": fsdp_bytes, "mode": "ulysses" if ulysses or sequence == 1 else "kv_gather"}


def _meta_block(cfg: DiTConfig) -> torch.nn.Module:
    """One WanBlock of `cfg`, without memory (for counting its weights)."""
    with torch.device("meta"):
        return WanDiT(replace(cfg, num_layers=1)).blocks[0]


def cost_table(gpus=(1, 2, 4, 8), peak_tflops: float = 989.0, mfu: float = 0.4, bandwidth_gbs: float = 200.0,
               steps: int = 50) -> None:
    """The 14B at 480p and 720p (81 frames): per process and step, compute against communication."""
    cfg = DIT_PRESETS["14B"]
    print(f"Assumed: {peak_tflops:g} TFLOP/s bf16 peak at {100 * mfu:g}% MFU, {bandwidth_gbs:g} GB/s all-to-all "
          f"per process, no overlap of the sequence all-to-alls; {steps} steps, CFG on, 512 context tokens.\n")
    print("| size | tokens | GPUs | layout | TFLOP / step / GPU | all-to-all GB / step / GPU | FSDP all-gather GB "
          "/ step / GPU | compute s / step | all-to-all s / step | comm / compute | est. s / 50 steps | "
          "est. speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, grid in GRIDS.items():
        one = None
        for n in gpus:
            for sequence, cfg_parallel in sorted({(n, False), (max(1, n // 2), n > 1)}):
                cost = step_cost(cfg, grid, n, sequence, cfg_parallel, fsdp=n > 1)
                compute = cost["flops"] / (peak_tflops * 1e12 * mfu)
                comm = cost["sequence_bytes"] / (bandwidth_gbs * 1e9)
                total = steps * (compute + comm)
                one = one or total
                layout = "1 GPU" if n == 1 else (f"SP {sequence}" + (" x CFG 2" if cfg_parallel else "")
                                                  + (f" ({cost['mode']})" if cost["mode"] != "ulysses" else ""))
                print(f"| {size} | {tokens_of(cfg, grid)} | {n} | {layout} | {cost['flops'] / 1e12:.0f} | "
                      f"{cost['sequence_bytes'] / 1e9:.1f} | {cost['fsdp_bytes'] / 1e9:.1f} | {compute:.2f} | "
                      f"{comm:.3f} | {comm / compute:.1%} | {total:.0f} | {one / total:.2f} |")


def build(cfg: DiTConfig, dtype: torch.dtype, device: torch.device, layout, fsdp: bool) -> WanDiT:
    """Random weights (std 0.02, the same on every process), sharded first when `fsdp` so no process holds all."""
    with torch.device("meta"):
        dit = WanDiT(cfg)
    cast_model(dit, dtype)  # the precision policy, still without memory
    if fsdp:
        P.shard_dit(dit, layout)
    dit.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in dit.parameters():
            (p.to_local() if hasattr(p, "to_local") else p).normal_(std=0.02)
    return dit.eval()


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def _time_step(dit, inputs, layout, device, repeats: int) -> float:
    settings = SamplerSettings(steps=1, guidance_scale=5.0)
    times = []
    for i in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        if layout is not None:
            dist.barrier()
        start = time.perf_counter()
        sample(dit, *inputs, settings, parallel=layout)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(args) -> None:
    cfg = CONFIGS[args.config]
    grid = tuple(int(v) for v in args.grid.split(",")) if args.grid else GRIDS["480p"]
    dtype, launched = DTYPES[args.dtype], P.launched()
    layout = None
    if launched is not None and launched[2] > 1:
        layout = P.start(args.sequence, 2 if args.cfg_parallel else 1, torch.device(args.device).type)
    device = layout.device if layout is not None else torch.device(args.device)
    dit = build(cfg, dtype, device, layout, args.fsdp)
    gen = torch.Generator().manual_seed(1)
    inputs = (torch.randn(1, 16, *grid, generator=gen).to(device), torch.randn(1, 16, 1, *grid[1:],
              generator=gen).to(device), torch.randn(1, args.context, cfg.text_dim, generator=gen).to(device, dtype),
              torch.randn(1, args.context, cfg.text_dim, generator=gen).to(device, dtype))
    seconds = _time_step(dit, inputs, layout, device, args.repeats)
    peak = torch.tensor([_peak_bytes(device)], dtype=torch.float64, device=device)
    processes = 1 if layout is None else layout.world
    if layout is not None:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    cost = step_cost(cfg, grid, processes, args.sequence, args.cfg_parallel, args.fsdp, args.context,
                     torch.finfo(dtype).bits // 8)
    if layout is None or layout.is_main:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
            f"CPU, {torch.get_num_threads()} thread(s) per process"
        print(f"| {args.config} ({cfg.num_layers} layers) | {name} | {args.dtype} | {grid} | {tokens_of(cfg, grid)} | "
              f"{processes} | {layout.describe() if layout else 'one process'}{', FSDP' if args.fsdp else ''} | "
              f"{seconds:.3f} | {peak.item() / 2**30:.2f} | {cost['sequence_bytes'] / 2**20:.1f} |")
    if layout is not None:
        layout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cost-model", action="store_true", help="print the cost model table and exit")
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--grid", help="latent frames,height,width (default 21,60,104: 832x480, 81 frames)")
    parser.add_argument("--context", type=int, default=512, help="context tokens")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or npu (the process's number is its LOCAL_RANK)")
    parser.add_argument("--sequence", type=int, default=1, help="processes splitting the tokens")
    parser.add_argument("--cfg-parallel", action="store_true")
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.cost_model:
        cost_table()
    else:
        measure(args)


if __name__ == "__main__":
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")  # a dead peer ends the run (NCCL)
    main()
