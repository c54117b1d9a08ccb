"""Time one DiT forward: uniworld_core vs diffusers' WanTransformer3DModel.

Both models get the same config, the same weights (diffusers' random init,
converted with our key map) and the same input; runs are interleaved in one
process and the median is reported. Prints a markdown table row.

    python bench/bench_dit.py --config tiny
    python bench/bench_dit.py --config mid --repeats 3
    python bench/bench_dit.py --config 1.3B --grid 13,60,104 --dtype bf16 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import WanTransformer3DModel

from uniworld_core.device import DTYPES, cast_model
from uniworld_core.model import DiTConfig, WanDiT
from uniworld_core.weights import official_state

CONFIGS = {  # name: (dim, ffn_dim, heads, layers, default latent grid)
    "tiny": (64, 128, 2, 2, (5, 12, 20)),
    "mid": (1536, 8960, 12, 4, (5, 40, 64)),
    "1.3B": (1536, 8960, 12, 30, (13, 60, 104)),
    "14B": (5120, 13824, 40, 40, (13, 60, 104)),
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16 tensor-core peak


def forward_flops(dim: int, ffn: int, layers: int, tokens: int, context: int) -> float:
    """Matmul FLOPs of one forward (2 per multiply-add), attention included."""
    per_block = (2 * tokens * dim * dim * 4          # self-attention q, k, v, o
                 + 2 * 2 * tokens * tokens * dim     # QK^T and AV
                 + 2 * tokens * dim * dim * 2        # cross-attention q, o
                 + 2 * context * dim * dim * 2       # cross-attention k, v
                 + 2 * 2 * tokens * context * dim    # cross QK^T and AV
                 + 2 * tokens * dim * ffn * 2)       # FFN
    return layers * per_block


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--grid", help="latent frames,height,width (default per config; "
                        "480x832x49 frames is 13,60,104)")
    parser.add_argument("--context", type=int, default=512, help="context tokens")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    dim, ffn, heads, layers, grid = CONFIGS[args.config]
    if args.grid:
        grid = tuple(int(v) for v in args.grid.split(","))
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    with torch.device("meta" if args.config in ("1.3B", "14B") else "cpu"):
        theirs = WanTransformer3DModel(num_attention_heads=heads, attention_head_dim=dim // heads,
                                       ffn_dim=ffn, num_layers=layers)
    if args.config in ("1.3B", "14B"):
        theirs = theirs.to_empty(device="cpu")
        for p in theirs.parameters():
            torch.nn.init.normal_(p, std=0.02)
    theirs = theirs.to(device, dtype).eval()
    ours = WanDiT(DiTConfig(dim=dim, ffn_dim=ffn, num_heads=heads, num_layers=layers, flashi2v=False))
    ours.load_state_dict(official_state(theirs.state_dict()), strict=True)
    ours = cast_model(ours.eval(), dtype, device)

    x = torch.randn(1, 16, *grid, device=device, dtype=dtype)
    t = torch.tensor([500.0], device=device)
    ctx = torch.randn(1, args.context, 4096, device=device, dtype=dtype)
    run_ours = lambda: ours(x, t, ctx)  # noqa: E731
    run_theirs = lambda: theirs(hidden_states=x, timestep=t, encoder_hidden_states=ctx,  # noqa: E731
                                return_dict=False)
    times = {"ours": [], "diffusers": []}
    with torch.no_grad():
        run_ours(), run_theirs()  # warm-up
        for _ in range(args.repeats):
            times["ours"].append(_time(run_ours, device))
            times["diffusers"].append(_time(run_theirs, device))
    ours_s, theirs_s = (statistics.median(times[k]) for k in ("ours", "diffusers"))
    tokens = grid[0] * (grid[1] // 2) * (grid[2] // 2)
    flops = forward_flops(dim, ffn, layers, tokens, args.context)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    mfu = f"{100 * flops / ours_s / 1e12 / peak:.1f}%" if peak else "n/a"
    print("| config | device | dtype | latent grid | tokens | ours s/fwd | diffusers s/fwd | "
          "diffusers/ours | our TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.config} ({layers} layers, dim {dim}) | {name} | {args.dtype} | {grid} | {tokens} | "
          f"{ours_s:.4f} | {theirs_s:.4f} | {theirs_s / ours_s:.2f} | {flops / ours_s / 1e12:.3f} | {mfu} |")


if __name__ == "__main__":
    main()
