"""The project against its peers at the same work, in one process, interleaved.

    python bench/bench_peers.py                       # every section; diffusers is always a peer
    UNIWORLD_COMFYUI_DIR=/path/ComfyUI UNIWORLD_COMFYUI_GGUF_DIR=/path/ComfyUI-GGUF \\
    UNIWORLD_COMFYUI_PYTHONPATH=/path/ComfyUI/venv/lib/python3.11/site-packages \\
        python bench/bench_peers.py --rounds 7 --threads 2

Sections (--sections, comma-separated; each prints a markdown table):
  dit        one DiT forward (1.3B block shape, 1,950 tokens): ours vs diffusers' WanTransformer3DModel and
             ComfyUI's WanModel, same weights and input; relative RMS of each against our float32 forward.
  attention  self-attention at that shape: PyTorch SDPA vs our chunked backend vs ComfyUI's attention.
  dequant    GGUF dequantisation of an 8960x1536 weight: ours as a GGUF layer runs it (shared buffers)
             vs ComfyUI-GGUF's `dequantize_tensor` (its default settings), per type and dtype; GB/s of
             output, and how many values differ from the float32 values rounded once to the dtype.
  linear     a GGUF linear (Q8_0, Q4_K) against a plain linear of the same dtype at 1,950 tokens.
  compile    our DiT forward with its block compiled by inductor vs eager: graph breaks, graphs compiled
             over a 3-step sampling run with CFG, compile seconds, speed-up, output difference.
  load       loading a bf16 DiT file, each load in a fresh process: our registry vs meta-device init +
             safetensors load_file + load_state_dict(assign=True); seconds and peak RSS / file size.

Timing: every contender runs once per round, in turn (the order reversed every other round), after a
warm-up call; tables give medians and the median (min-max) of the per-round ratios, which stay
meaningful when other work shares the machine.
ComfyUI's modules need its pure-Python dependencies (einops, ...): UNIWORLD_COMFYUI_PYTHONPATH is appended
to sys.path after everything else, so every contender runs on the same torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_load import write_checkpoint  # noqa: E402

from uniworld_core.device import cast_model  # noqa: E402
from uniworld_core.model import (  # noqa: E402
    DiTConfig,
    WanDiT,
    bf16_score_attention,
    chunked_attention,
    compile_blocks,
    get_attention,
    graph_breaks,
    rope_tables,
    sdpa_attention,
)
from uniworld_core.quant import SHARED, GGUFLinear, dequantize, quantize  # noqa: E402
from uniworld_core.sampling import SamplerSettings, sample  # noqa: E402
from uniworld_core.weights import official_state  # noqa: E402

DIT_SHAPE = {"dim": 1536, "ffn_dim": 8960, "num_heads": 12}  # the 1.3B block
GRID = (5, 30, 52)  # latent frames, height, width: 5 x 15 x 26 = 1950 tokens after 1x2x2 patches (--grid)
TOKENS = GRID[0] * GRID[1] * GRID[2] // 4
DEVICE = torch.device("cpu")  # --device
CONTEXT = 512
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHT = (8960, 1536)  # the 1.3B FFN's first matrix
GGUF_TYPES = ("Q8_0", "Q4_K", "Q5_K", "Q6_K")


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender, one call of each per round (order reversed every other round,
    so that neither runs always first), after a warm-up call of each."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(rounds):
        for name, fn in list(contenders.items())[::1 if round_ % 2 == 0 else -1]:
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def where() -> str:
    name = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    return f"{name}, {torch.get_num_threads()} threads" if DEVICE.type == "cpu" else name


def ratio(times: dict[str, list[float]], name: str, base: str) -> str:
    """'median (min-max)' of the per-round ratios name / base."""
    ratios = [a / b for a, b in zip(times[name], times[base])]
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def median(times: dict[str, list[float]], name: str) -> float:
    return statistics.median(times[name])


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm()).item()


def peer_folder(variable: str) -> Path | None:
    """A peer folder named by an environment variable, with ComfyUI's dependencies importable."""
    folder = os.environ.get(variable)
    if not folder:
        return None
    extra = os.environ.get("UNIWORLD_COMFYUI_PYTHONPATH")
    if extra and extra not in sys.path:
        sys.path.append(extra)
    return Path(folder)


def comfy_modules():
    """ComfyUI's WanModel, ops and attention, or None without UNIWORLD_COMFYUI_DIR."""
    folder = peer_folder("UNIWORLD_COMFYUI_DIR")
    if folder is None:
        return None
    if str(folder) not in sys.path:
        sys.path.insert(1, str(folder))
    argv, sys.argv = sys.argv, [sys.argv[0]] + (["--cpu"] if DEVICE.type == "cpu" else [])
    import comfy.options

    comfy.options.enable_args_parsing()  # as ComfyUI's main.py does, so --cpu is read
    import comfy.ops
    from comfy.ldm.modules import attention
    from comfy.ldm.wan.model import WanModel

    sys.argv = argv
    return WanModel, comfy.ops, attention


def comfy_gguf():
    """ComfyUI-GGUF's dequant module, or None without UNIWORLD_COMFYUI_GGUF_DIR."""
    folder = peer_folder("UNIWORLD_COMFYUI_GGUF_DIR")
    if folder is None:
        return None
    spec = importlib.util.spec_from_file_location("comfyui_gguf_dequant", folder / "dequant.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def diffusers_cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast as diffusers' from_pretrained(torch_dtype=...) does: its `_keep_in_fp32_modules` stay float32."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, param in model.named_parameters():
        param.data = param.data.to(torch.float32 if any(p in name.split(".") for p in keep) else dtype)
    return model


def dit_models(layers: int, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """ours, diffusers, ComfyUI (when given) and ours in float32 ('reference'), with the same weights."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    theirs = WanTransformer3DModel(num_attention_heads=DIT_SHAPE["num_heads"], ffn_dim=DIT_SHAPE["ffn_dim"],
                                   attention_head_dim=DIT_SHAPE["dim"] // DIT_SHAPE["num_heads"],
                                   num_layers=layers).eval()
    for p in theirs.parameters():  # diffusers zero-inits some layers; make every weight count
        torch.nn.init.normal_(p, std=0.02)
    cfg = DiTConfig(**DIT_SHAPE, num_layers=layers, flashi2v=False)
    state = official_state(theirs.state_dict())
    models = {"reference": WanDiT(cfg).eval(), "ours": WanDiT(cfg).eval()}
    for model in models.values():
        model.load_state_dict(state, strict=True)
    models["reference"] = models["reference"].to(DEVICE)
    models["ours"] = cast_model(models["ours"], dtype, DEVICE)
    models["ours"].attention = get_attention("auto", DEVICE)  # what a user gets by default
    models["diffusers"] = diffusers_cast(theirs, dtype).to(DEVICE)
    comfy = comfy_modules()
    if comfy is not None:
        wan, ops, _ = comfy
        model = wan(model_type="t2v", patch_size=cfg.patch_size, text_len=cfg.text_len, in_dim=cfg.in_dim,
                    dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim,
                    out_dim=cfg.out_dim, num_heads=cfg.num_heads, num_layers=layers,
                    cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps, device="cpu", dtype=dtype,
                    operations=ops.disable_weight_init)
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
        models["ComfyUI"] = model.eval().to(DEVICE)
    return models


def dit_runs(models: dict[str, torch.nn.Module], dtype: torch.dtype):
    """(a call per contender, the float32 reference output)."""
    gen = torch.Generator().manual_seed(1)
    x, ctx, t = (torch.randn(1, 16, *GRID, generator=gen).to(DEVICE),
                 torch.randn(1, CONTEXT, 4096, generator=gen).to(DEVICE), torch.tensor([500.0], device=DEVICE))
    xd, cd = x.to(dtype), ctx.to(dtype)
    runs = {"ours": lambda: models["ours"](xd, t, cd),
            "diffusers": lambda: models["diffusers"](hidden_states=xd, timestep=t, encoder_hidden_states=cd,
                                                     return_dict=False)[0]}
    if "ComfyUI" in models:
        runs["ComfyUI"] = lambda: models["ComfyUI"](xd, t, cd)
    return runs, models["reference"](x, t, ctx)


def bench_dit(args) -> None:
    print(f"\n### DiT forward: 1.3B block shape, {args.layers} layers, {TOKENS} tokens, {CONTEXT} context "
          f"tokens, {where()}, {args.rounds} rounds\n")
    print("| dtype | peer | ours s | peer s | ours / peer | rel. RMS vs fp32: ours | peer |")
    print("|---|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        with torch.inference_mode():
            runs, ref = dit_runs(dit_models(args.layers, DTYPES[name]), DTYPES[name])
            errors = {k: rel_rms(fn(), ref) for k, fn in runs.items()}
            times = interleaved(runs, args.rounds)
        for peer in (k for k in runs if k != "ours"):
            print(f"| {name} | {peer} | {median(times, 'ours'):.3f} | {median(times, peer):.3f} | "
                  f"{ratio(times, 'ours', peer)} | {errors['ours']:.4f} | {errors[peer]:.4f} |")


def bench_attention(args) -> None:
    print(f"\n### Self-attention, [1, {TOKENS}, 12, 128], {where()}, {args.rounds} rounds\n")
    print("| dtype | contender | s | / SDPA | rel. RMS vs float64 |")
    print("|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, TOKENS, 12, 128, generator=gen).to(DEVICE) for _ in range(3))
    exact = torch.softmax(q.double().transpose(1, 2) @ k.double().transpose(1, 2).transpose(-1, -2) / 128**0.5,
                          -1) @ v.double().transpose(1, 2)
    for name in args.dtypes.split(","):
        attention_rows(name, *(t.to(DTYPES[name]) for t in (q, k, v)), exact, args.rounds)


def attention_rows(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, exact: torch.Tensor,
                   rounds: int) -> None:
    comfy = comfy_modules()
    runs = {"SDPA": lambda: sdpa_attention(q, k, v), "chunked": lambda: chunked_attention(q, k, v),
            "bf16 scores": lambda: bf16_score_attention(q, k, v)}
    if comfy is not None:
        runs["ComfyUI"] = lambda: comfy[2].optimized_attention(q.flatten(2), k.flatten(2), v.flatten(2),
                                                               heads=12).unflatten(2, (12, 128))
    times = interleaved(runs, rounds)
    for who, fn in runs.items():
        error = rel_rms(fn().transpose(1, 2), exact)
        print(f"| {name} | {who} | {median(times, who):.3f} | {ratio(times, who, 'SDPA')} | {error:.4f} |")


def gguf_weight(kind: str) -> torch.Tensor:
    """The raw blocks of a random weight of trained scale, quantised to `kind`."""
    torch.manual_seed(0)
    blocks = quantize(torch.randn(WEIGHT) * 0.02, kind)  # numpy bytes [rows, bytes per row]
    return torch.from_numpy(blocks.reshape(-1).view("uint8").copy()).to(DEVICE)


def gguf_layer(kind: str, dtype: torch.dtype) -> GGUFLinear:
    """A GGUF linear holding `gguf_weight(kind)` (zero bias)."""
    layer = GGUFLinear(WEIGHT[1], WEIGHT[0], True, kind, dtype, device=DEVICE)
    layer.weight = torch.nn.Parameter(gguf_weight(kind), requires_grad=False)
    layer.bias = torch.nn.Parameter(torch.zeros(WEIGHT[0], dtype=dtype, device=DEVICE), requires_grad=False)
    return layer


def ours_as_layer(kind: str, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    """Our dequantisation exactly as a GGUF layer runs it at inference (shared buffers)."""
    layer = gguf_layer(kind, dtype)
    return lambda: layer.dequantize(dtype, shared=True)


def theirs_default(module, raw: torch.Tensor, kind: str, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    """ComfyUI-GGUF's `dequantize_tensor` as its loader runs it by default (dequant_dtype None)."""
    import gguf

    qtype = gguf.GGMLQuantizationType[kind]

    class Tensor(torch.Tensor):  # its GGMLTensor carries the type and shape the same way
        pass

    tensor = raw.as_subclass(Tensor)
    tensor.tensor_type, tensor.tensor_shape = qtype, torch.Size(WEIGHT)
    return lambda: module.dequantize_tensor(tensor, dtype, None)


def bench_dequant(args) -> None:
    theirs = comfy_gguf()
    print(f"\n### GGUF dequantisation of a {WEIGHT[0]}x{WEIGHT[1]} weight, {where()}, "
          f"{args.rounds} rounds\n")
    print("| type | dtype | ours GB/s | ComfyUI-GGUF GB/s | ours / ComfyUI-GGUF time | "
          "values != fp32 cast: ours | ComfyUI-GGUF | rel. RMS vs exact: ours | ComfyUI-GGUF |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in GGUF_TYPES:
        raw = gguf_weight(kind)
        exact = dequantize(raw, kind, WEIGHT, torch.float32)
        for name in ("fp32", "bf16", "fp16"):
            dtype = DTYPES[name]
            runs = {"ours": ours_as_layer(kind, dtype)}
            if theirs is not None:
                runs["theirs"] = theirs_default(theirs, raw, kind, dtype)
            with torch.no_grad():
                times = interleaved(runs, args.rounds)
                cast = exact.to(dtype)
                stats = {k: ((fn() != cast).float().mean().item(), rel_rms(fn(), exact)) for k, fn in runs.items()}
            gbs = {k: exact.numel() * cast.element_size() / median(times, k) / 1e9 for k in runs}
            if theirs is None:
                print(f"| {kind} | {name} | {gbs['ours']:.2f} | - | - | {stats['ours'][0]:.4f} | - | "
                      f"{stats['ours'][1]:.5f} | - |")
            else:
                print(f"| {kind} | {name} | {gbs['ours']:.2f} | {gbs['theirs']:.2f} | {ratio(times, 'ours', 'theirs')}"
                      f" | {stats['ours'][0]:.4f} | {stats['theirs'][0]:.4f} | {stats['ours'][1]:.5f} | "
                      f"{stats['theirs'][1]:.5f} |")
    SHARED.clear()


def bench_linear(args) -> None:
    print(f"\n### A GGUF linear vs a plain linear, {WEIGHT[1]} -> {WEIGHT[0]}, {TOKENS} tokens, "
          f"{where()}, {args.rounds} rounds\n")
    print("| dtype | type | plain s | GGUF s | GGUF / plain | compiled GGUF s | compiled / plain |")
    print("|---|---|---|---|---|---|---|")
    x = torch.randn(1, TOKENS, WEIGHT[1], generator=torch.Generator().manual_seed(0)).to(DEVICE)
    for name in ("fp32", "bf16"):
        for kind in ("Q8_0", "Q4_K"):
            linear_row(name, kind, x, args)
    SHARED.clear()


def linear_row(name: str, kind: str, x: torch.Tensor, args) -> None:
    dtype = DTYPES[name]
    layer = gguf_layer(kind, dtype)
    plain = torch.nn.Linear(WEIGHT[1], WEIGHT[0], dtype=dtype, device=DEVICE).requires_grad_(False)
    plain.weight.copy_(layer.dequantize(dtype))
    x = x.to(dtype)
    runs = {"plain": lambda: plain(x), "gguf": lambda: layer(x)}
    if args.compile_linear:
        compiled = torch.compile(layer, fullgraph=True, dynamic=False)
        runs["compiled"] = lambda: compiled(x)
    with torch.no_grad():
        times = interleaved(runs, args.rounds)
    extra = (f"{median(times, 'compiled'):.3f} | {ratio(times, 'compiled', 'plain')}" if "compiled" in runs
             else "- | -")
    print(f"| {name} | {kind} | {median(times, 'plain'):.3f} | {median(times, 'gguf'):.3f} | "
          f"{ratio(times, 'gguf', 'plain')} | {extra} |")


def compile_run(model: WanDiT, dtype: torch.dtype) -> torch.Tensor:
    """A 3-step sampling run with CFG (cond and uncond batched) at the bench's grid."""
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 16, *GRID, generator=gen).to(DEVICE)
    start = torch.randn(1, 16, 1, *GRID[1:], generator=gen).to(DEVICE)
    context, negative = (torch.randn(1, CONTEXT, 4096, generator=gen).to(DEVICE, dtype) for _ in range(2))
    return sample(model, noise, start, context, negative, SamplerSettings(steps=3, shift=5.0, guidance_scale=5.0))


def bench_compile(args) -> None:
    print(f"\n### Regional torch.compile (inductor) of our DiT block: 1.3B block shape, {args.layers} layers, "
          f"{TOKENS} tokens, {where()}, {args.rounds} rounds\n")
    print("| dtype | graph breaks | graphs in a 3-step CFG run | compile + first forward s | eager s | "
          "compiled s | compiled / eager | rel. RMS compiled vs eager |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        with torch.inference_mode():
            compile_row(name, args)


def compile_row(name: str, args) -> None:
    dtype = DTYPES[name]
    cfg = DiTConfig(**DIT_SHAPE, num_layers=args.layers)  # with the FlashI2V modules, as sampled
    torch.manual_seed(0)
    model = WanDiT(cfg).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model = cast_model(model, dtype, DEVICE)
    model.attention = get_attention("auto", DEVICE)
    gen = torch.Generator().manual_seed(1)
    x, ff = (torch.randn(1, 16, *GRID, generator=gen).to(DEVICE, dtype) for _ in range(2))
    ctx, t = torch.randn(1, CONTEXT, 4096, generator=gen).to(DEVICE, dtype), torch.tensor([500.0], device=DEVICE)
    block_args = (torch.randn(1, TOKENS, cfg.dim).to(DEVICE), torch.randn(1, 6, cfg.dim).to(DEVICE),
                  torch.randn(1, CONTEXT, cfg.dim).to(DEVICE, dtype),
                  rope_tables((GRID[0], GRID[1] // 2, GRID[2] // 2), cfg.head_dim, DEVICE), sdpa_attention)
    breaks = graph_breaks(model.blocks[0], *block_args)
    eager_out = model(x, t, ctx, ff)
    started = time.perf_counter()
    state = compile_blocks(model, log=lambda m: None)
    compiled_out = model(x, t, ctx, ff)
    first = time.perf_counter() - started
    compile_run(model, dtype)  # cond+uncond as a batch of 2: a new shape, so exactly one more graph
    graphs_in_run = state.compiles - 1
    compiled = [b.forward for b in model.blocks]

    def run(use_compiled: bool) -> torch.Tensor:
        for block, forward in zip(model.blocks, compiled):
            if use_compiled:
                block.forward = forward
            else:
                block.__dict__.pop("forward", None)
        return model(x, t, ctx, ff)
    times = interleaved({"eager": lambda: run(False), "compiled": lambda: run(True)}, args.rounds)
    print(f"| {name} | {breaks} | {graphs_in_run} | {first:.1f} | {median(times, 'eager'):.3f} | "
          f"{median(times, 'compiled'):.3f} | {ratio(times, 'compiled', 'eager')} | "
          f"{rel_rms(compiled_out, eager_out):.4f} |" + (f" (failed: {state.failed})" if state.failed else ""))


LOAD_CHILD = """
import sys, time, torch
def kib(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
mode, path = sys.argv[1], sys.argv[2]
open("/proc/self/clear_refs", "w").write("5")
before = kib("VmRSS")
start = time.perf_counter()
if mode == "ours":
    from uniworld_core import load
    model = load(path, "dit", dtype=torch.bfloat16).model
else:
    from safetensors.torch import load_file
    from uniworld_core import WanDiT
    from uniworld_core.weights import peek_config
    with torch.device("meta"):
        model = WanDiT(peek_config(path, "dit"))
    model.load_state_dict(load_file(path), assign=True)
with torch.no_grad():  # read every weight once, so memory-mapped tensors count as resident too
    checksum = sum(float(p.sum()) for p in model.parameters())
print(time.perf_counter() - start, (kib("VmHWM") - before) * 1024)
"""


def bench_load(args) -> None:
    preset, layers = args.load_config.split(":")
    path = Path(args.dir) / f"bench_peers_{preset}_{layers}l_bf16.safetensors"
    size = write_checkpoint(path, preset, int(layers))  # a random bf16 DiT file, as bench_load.py writes it
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    results: dict[str, list[tuple[float, int]]] = {"ours": [], "meta+assign": []}
    try:
        for _ in range(args.load_rounds):
            for mode in results:
                out = subprocess.run([sys.executable, "-c", LOAD_CHILD, mode, str(path)], env=env,
                                     capture_output=True, text=True, check=True).stdout.split()
                results[mode].append((float(out[0]), int(out[1])))
    finally:
        path.unlink()
    times = {k: [s for s, _ in v] for k, v in results.items()}
    print(f"\n### Loading a {preset}-config DiT with {layers} blocks, bf16 file of {size / 2**30:.2f} GiB, to bf16 "
          f"on the CPU (each load a fresh process, {args.load_rounds} rounds)\n")
    print("| loader | s (median) | peak RSS / file (median, min-max) | ours / meta+assign time |")
    print("|---|---|---|---|")
    for mode, runs in results.items():
        peaks = [p / size for _, p in runs]
        print(f"| {mode} | {statistics.median(times[mode]):.2f} | {statistics.median(peaks):.3f} "
              f"({min(peaks):.3f}-{max(peaks):.3f}) | {ratio(times, mode, 'meta+assign')} |")


SECTIONS = {"dit": bench_dit, "attention": bench_attention, "dequant": bench_dequant, "linear": bench_linear,
            "compile": bench_compile, "load": bench_load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {list(SECTIONS)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--layers", type=int, default=2, help="DiT blocks in the dit and compile sections")
    parser.add_argument("--dtypes", default="fp32,bf16", help="dtypes of the dit, attention and compile sections")
    parser.add_argument("--compile-linear", action="store_true", help="also time the GGUF linear compiled")
    parser.add_argument("--load-config", default="14B:8", help="preset:blocks of the load section's file")
    parser.add_argument("--load-rounds", type=int, default=3)
    parser.add_argument("--dir", default="/tmp", help="where the load section writes its file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:n] (every section but load)")
    parser.add_argument("--grid", help="latent frames,height,width (default 5,30,52: 1,950 tokens; "
                        "480x832x49 frames is 13,60,104)")
    args = parser.parse_args()
    global DEVICE, GRID, TOKENS
    DEVICE = torch.device(args.device)
    if args.grid:
        GRID = tuple(int(v) for v in args.grid.split(","))
        TOKENS = GRID[0] * GRID[1] * GRID[2] // 4
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {where()}; {time.strftime('%Y-%m-%d')}")
    for section in args.sections.split(","):
        SECTIONS[section](args)


if __name__ == "__main__":
    main()
