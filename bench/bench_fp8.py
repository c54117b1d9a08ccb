"""One linear, three ways: a plain bf16 weight, an fp8 weight upcast per call, and the fp8 matmul.

For each shape of a DiT block (default: the 14B's), the same random weight is
stored in e4m3 with a per-tensor scale (as our fp8 files and ComfyUI's scaled
fp8 files do) and run as `Fp8Linear` twice: upcast (the default) and with
`use_fp8_matmul` (`torch._scaled_mm`). Interleaved rounds, medians; the error
is the relative RMS against the float64 product of the bf16 input and the
float32 weight.

    python bench/bench_fp8.py --device cuda --tokens 65520 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from uniworld_core.quant import Fp8Linear, layers, use_fp8_matmul

SHAPES = {"14B": [(5120, 5120), (5120, 13824), (13824, 5120)], "1.3B": [(1536, 1536), (1536, 8960), (8960, 1536)]}


def _fp8(weight: torch.Tensor) -> Fp8Linear:
    layer = Fp8Linear(weight.shape[1], weight.shape[0], False, torch.bfloat16, device=weight.device)
    scale = weight.abs().max() / 448.0
    layer.weight.data = (weight / scale).to(torch.float8_e4m3fn)
    layer.scale_weight.data = scale.reshape(())
    return layer


def _time(run, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="14B", choices=sorted(SHAPES))
    parser.add_argument("--tokens", type=int, default=1950)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    layers.FP8_MATMUL_MIN_OUT = 0  # measure every shape (the layer's rule skips the narrow ones)
    print("| in -> out | tokens | bf16 s | fp8 upcast s | fp8 matmul s | upcast / bf16 | matmul / bf16 | "
          "rel. RMS: bf16 | upcast | matmul |\n|---|---|---|---|---|---|---|---|---|---|")
    for fan_in, fan_out in SHAPES[args.model]:
        print(_row(fan_in, fan_out, args.tokens, args.rounds, device), flush=True)


def _row(fan_in: int, fan_out: int, tokens: int, rounds: int, device: torch.device) -> str:
    """One shape: the three linears timed in interleaved rounds, and their errors."""
    gen = torch.Generator().manual_seed(fan_in + fan_out)
    weight = (torch.randn(fan_out, fan_in, generator=gen) / fan_in**0.5).to(device)
    x = torch.randn(tokens, fan_in, generator=gen).to(device, torch.bfloat16)
    plain, upcast, fast = weight.bfloat16(), _fp8(weight), _fp8(weight)
    use_fp8_matmul(fast)
    runs = {"bf16": lambda: F.linear(x, plain), "upcast": lambda: upcast(x), "matmul": lambda: fast(x)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        exact = x.double() @ weight.double().t()
        errors = {name: ((run().double() - exact).square().mean().sqrt() / exact.square().mean().sqrt()).item()
                  for name, run in runs.items()}  # also the warm-up
        for i in range(rounds):
            for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                times[name].append(_time(runs[name], device))
    med = {name: statistics.median(values) for name, values in times.items()}
    return (f"| {fan_in} -> {fan_out} | {tokens} | {med['bf16']:.4f} | {med['upcast']:.4f} | {med['matmul']:.4f} | "
            f"{med['upcast'] / med['bf16']:.2f} | {med['matmul'] / med['bf16']:.2f} | "
            f"{errors['bf16']:.4f} | {errors['upcast']:.4f} | {errors['matmul']:.4f} |")

if __name__ == "__main__":
    main()
