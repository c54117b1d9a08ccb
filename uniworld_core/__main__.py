"""Command line: `python -m uniworld_core generate ...` (see --help)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from .cli import (
    VAE_TILE_OVERLAP,
    available_memory,
    check_device,
    check_files,
    check_image,
    check_parallel,
    check_settings,
    output_path,
    parallel_wanted,
    parser,
    print_error,
)
from .conditioning import StyleSpec, all_styles, umt5_conditioner, vlm_conditioner
from .device import DTYPES, resolve_dtype
from .errors import InputError, UniWorldError
from .media import av_available, demo_image, save_mp4, save_webp
from .memory import AUTO, Placement, least_generation_bytes, place_dit
from .model import DIT_PRESETS, VAE_PRESETS, VAEConfig, compile_blocks, get_attention
from .parallel import Parallel, ProcessFailure, shard_dit
from .parallel import decode_frames as decode_shared
from .parallel import start as start_parallel
from .presets import miniature
from .presets.tiny import TINY_NOTICE, tiny_context, tiny_stack
from .progress import print_progress
from .quant import enable_fp8_matmul
from .sampling import (
    LONGEST_RUN,
    REPORT,
    SCHEDULE_SUFFIX,
    TINY,
    CacheSettings,
    CacheStats,
    ContinuationSettings,
    SamplerSettings,
    VideoSettings,
    choose_wan_schedule,
    encode_start,
    generate_latents,
    generate_long,
)
from .weights import convert_file, inspect_file, load, peek_config, quantize_file, trained_for_continuation

GIB = 2**30
SETTINGS = ("width", "height", "frames", "steps", "cfg", "shift", "fourier_ratio", "fps")


def quantize_command(args: argparse.Namespace) -> None:
    out = quantize_file(args.file, args.out, args.type)
    print(f"wrote {out} ({args.type}, {out.stat().st_size / 2**20:.1f} MiB)")


def inspect_command(args: argparse.Namespace) -> int:
    """Print the report; exit 1 when the file would not load (its problems are listed)."""
    report = inspect_file(args.file)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for key, value in report.items():
            if isinstance(value, list) and len(value) > 8:
                value = f"{len(value)}: {value[:8]} ..."
            print(f"{key:>16}: {value}")
    if report.get("problems"):
        print(f"error: '{Path(args.file).name}' would not load: {'; '.join(report['problems'][:3])}",
              file=sys.stderr)
        return 1
    return 0


def convert_command(args: argparse.Namespace) -> None:
    out = convert_file(args.file, args.out, DTYPES[args.dtype])
    print(f"wrote {out} ({inspect_file(out)['kind']}, {args.dtype}, official keys)")


@dataclass
class Stack:
    """What one generate run works with: the models, where they live, and the conditioning."""

    dit: torch.nn.Module
    vae: torch.nn.Module
    vae_place: Placement  # the VAE visits the device only while it runs with --offload
    image: torch.Tensor
    context: torch.Tensor
    negative: torch.Tensor | None


def _style_spec(args: argparse.Namespace, styles: dict) -> StyleSpec:
    """--style / --style-strength as a StyleSpec; an unknown name is refused with the known ones."""
    if not args.style:
        return StyleSpec()
    if args.style not in styles:
        raise InputError(f"--style {args.style}", f"one of {', '.join(styles)}")
    return StyleSpec(styles[args.style], args.style_strength)


def _fill(args: argparse.Namespace, defaults) -> None:
    for key in SETTINGS:
        if getattr(args, key) is None:
            setattr(args, key, getattr(defaults, key))


def _preset(args: argparse.Namespace) -> str | None:
    """'miniature', 'tiny' or None (files given)."""
    if args.dit is not None:
        return None
    if args.preset is not None:
        if args.preset == "miniature" and not miniature.available():
            raise InputError("--preset miniature, which is not installed here", "the built-in model's files "
                             f"in {miniature.model_dir()}", "Rebuild it: python -m training.miniature --out DIR.")
        return args.preset
    if miniature.available():
        return "miniature"
    print("The built-in miniature model is not installed; running the random-weight 'tiny' preset.")
    return "tiny"


def _miniature_example(args: argparse.Namespace) -> None:
    """Without --image and --prompt the miniature animates its first example; say when a prompt is empty."""
    example = (miniature.examples() or [{}])[0]
    if args.image is None and args.prompt is None:
        args.image, args.prompt = example.get("image"), example.get("prompt")
        args.style = args.style or example.get("style")
    if not args.prompt:
        print("Note: no --prompt given, so the miniature model runs on an empty prompt; its captions say what "
              "moves where, e.g. 'a medium blue square slides left over the sky'.")
        args.prompt = ""


def _configs(args: argparse.Namespace, preset: str | None):
    """(DiTConfig, VAEConfig) of the run, read from file headers (nothing is loaded)."""
    if preset == "tiny":
        return DIT_PRESETS["tiny"], VAE_PRESETS["tiny"]
    folder = miniature.model_dir()
    dit = args.dit if preset is None else folder / miniature.FILES["dit"]
    vae = args.vae if preset is None else folder / miniature.FILES["vae"]
    return peek_config(dit, "dit"), peek_config(vae, "vae")


def _run_grid(args: argparse.Namespace, vae_cfg: VAEConfig) -> tuple[int, int, int]:
    """The latent grid of the largest sampling run: one run, or a continuation's context window and new frames."""
    run = 1 + (min(args.frames, args.run_frames) - 1) // vae_cfg.temporal_factor
    if args.frames > args.run_frames:
        run = max(run, args.context_frames + args.new_frames)
    return run, args.height // vae_cfg.spatial_factor, args.width // vae_cfg.spatial_factor


def _check_memory(args: argparse.Namespace, preset: str | None, device: torch.device) -> None:
    """Refuse a size whose activations alone exceed the memory there is, before allocating anything."""
    dit_cfg, vae_cfg = _configs(args, preset)
    grid = _run_grid(args, vae_cfg)
    compute = 4 if resolve_dtype(args.precision, device) == torch.float32 else 2
    batch = 1 if args.cfg == 1 or args.cfg_parallel else 2  # per process
    needed = least_generation_bytes(dit_cfg, vae_cfg, grid, batch, compute, args.sequence_parallel)
    if device.type == "cpu" and parallel_wanted(args):  # the processes of one machine share its RAM
        needed *= int(os.environ.get("LOCAL_WORLD_SIZE", args.sequence_parallel * (1 + args.cfg_parallel)))
    available = available_memory(device)
    if available is not None and needed > available:
        raise InputError(f"a {args.width}x{args.height}, {args.frames}-frame video, whose sampling needs at least "
                         f"{needed / GIB:.1f} GiB beyond the weights", f"at most the {available / GIB:.1f} GiB "
                         f"available on {device}", "Use a smaller size or fewer frames; block swap (--vram-budget) "
                         "only moves weights.")


def _context_file(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """--context: a safetensors file with 'context' [1, L, D] (and optionally 'negative_context')."""
    try:
        features = load_file(path)
    except Exception as exc:  # safetensors reports a bad file as several exception types
        raise InputError(f"--context {path}, which could not be read as safetensors ({exc.__class__.__name__})",
                         "a safetensors file with a 'context' tensor [1, L, D]") from exc
    for key in ("context", "negative_context"):
        value = features.get(key)
        if (value is None and key == "context") or (value is not None and (value.ndim != 3 or value.shape[0] != 1
                                                                           or not value.is_floating_point())):
            found = "no 'context' tensor" if value is None else f"'{key}' of shape {tuple(value.shape)}"
            raise InputError(f"--context {path} with {found} (keys: {sorted(features)[:6]})",
                             f"a float '{key}' tensor of shape [1, L, D]")
    return features["context"], features.get("negative_context")


def _swapping(args: argparse.Namespace, device: torch.device) -> bool:
    """Whether the DiT may be block-swapped (then it is loaded to the CPU and placed); never under --fsdp."""
    return not args.fsdp and (args.blocks_to_swap > 0 or (args.blocks_to_swap == AUTO and (
        device.type != "cpu" or args.vram_budget is not None)))


def _dit_device(args: argparse.Namespace, device: torch.device) -> torch.device:
    """Where the DiT is loaded: the CPU when it is placed or sharded afterwards, else the device."""
    return torch.device("cpu") if _swapping(args, device) or args.fsdp else device


def _place(args: argparse.Namespace, dit: torch.nn.Module, device: torch.device, vae_cfg: VAEConfig) -> None:
    budget = None if args.vram_budget is None else int(args.vram_budget * GIB)
    placed = place_dit(dit, device, budget, args.blocks_to_swap, args.prefetch_blocks, _run_grid(args, vae_cfg),
                       batch=1 if args.cfg == 1 else 2)
    print(f"DiT placement: {placed.summary()}")


def _conditioning(args, image, device, dtype):
    """(positive, negative) context from --context, --vlm + --adapter, or --umt5."""
    if args.context:
        return _context_file(args.context)
    if args.vlm:
        conditioner = vlm_conditioner(args.vlm, args.adapter, args.tokenizer, dtype, device, args.offload)
    else:
        conditioner = umt5_conditioner(args.umt5, args.tokenizer, dtype, device, args.offload)
    return conditioner.encode(image, args.prompt, _style_spec(args, all_styles()), args.negative)


def _miniature_stack(args, device, attention, image) -> Stack:
    swapping = _swapping(args, device)
    model = miniature.load_miniature(device=_dit_device(args, device), attention=attention,
                                     encoder_device=device)
    context, negative = model.conditioner.encode(image, args.prompt, _style_spec(args, model.styles()),
                                                 args.negative)
    if swapping:
        _place(args, model.dit, device, model.vae.cfg)
    return Stack(model.dit, model.vae, Placement(model.vae, device, args.offload), image, context, negative)


def _tiny_stack(args, device, attention, image) -> Stack:
    print(TINY_NOTICE)
    swapping = _swapping(args, device)
    dit, vae = tiny_stack(args.seed, _dit_device(args, device),
                          resolve_dtype(args.precision, device), attention)
    if swapping:
        _place(args, dit, device, vae.cfg)
    context, negative = tiny_context(dit.cfg.text_dim, dit.cfg.text_len, args.seed)
    return Stack(dit, vae, Placement(vae, device, args.offload), image, context, negative)


def _file_stack(args, device, attention, image) -> Stack:
    dtype = resolve_dtype(args.precision, device)
    swapping = _swapping(args, device)
    dit = load(args.dit, "dit", _dit_device(args, device), dtype, attention).model
    if swapping:
        _place(args, dit, device, peek_config(args.vae, "vae"))
    vae = load(args.vae, "vae", "cpu", torch.float32 if device.type == "cpu" else dtype).model
    context, negative = _conditioning(args, image, device, dtype)
    return Stack(dit, vae, Placement(vae, device, args.offload), image, context, negative)


def _prepare(args: argparse.Namespace) -> tuple[str | None, Path, torch.device, torch.Tensor]:
    """Every check of a generate run, before any model is loaded: (preset, output, device, image)."""
    out = output_path(args.out)
    check_files(args)
    preset = _preset(args)
    defaults = miniature.defaults() if preset == "miniature" else TINY if preset == "tiny" else REPORT
    _fill(args, defaults)
    args.run_frames = args.run_frames or (defaults.frames if preset else LONGEST_RUN)  # more: continuations
    window = miniature.card().get("continuation") or {} if preset == "miniature" else {}
    for key in ("context_frames", "new_frames"):
        if getattr(args, key) is None:
            setattr(args, key, window.get(key, getattr(ContinuationSettings, key)))
    if preset == "miniature":
        _miniature_example(args)
    args.prompt = args.prompt or ""
    check_settings(args)
    _check_long(args)
    args.cache_settings = CacheSettings.parse(args.cache).with_schedule(
        args.dit or miniature.model_dir() / miniature.FILES["dit"])
    check_parallel(args, args.cache_settings.active)
    _style_spec(args, all_styles([miniature.model_dir()]) if preset == "miniature" else all_styles())
    device = check_device(args.device)
    image = check_image(args.image)
    if image is None:
        image = demo_image(args.width, args.height, args.seed)
    if args.context:
        _context_file(args.context)
    _check_memory(args, preset, device)
    return preset, out, device, image


def _check_long(args: argparse.Namespace) -> None:
    """What a video longer than one run cannot be combined with, before anything is loaded."""
    if args.frames <= args.run_frames:
        return
    refused = [("parallel runs", parallel_wanted(args)), ("--vae-tile", bool(args.vae_tile)),
               ("cache-calibrate", args.command == "cache-calibrate")]
    for what, given in refused:
        if given:
            raise InputError(f"{args.frames} frames (more than one run of {args.run_frames}) with {what}",
                             f"at most {args.run_frames} frames, one run, with {what}",
                             f"Give --run-frames {args.frames} to make it one run, or drop {what}.")


def _continuation(args: argparse.Namespace, preset: str | None) -> ContinuationSettings:
    """How a video longer than one run is made: continuation where the model was trained for it."""
    if args.continuation == "auto":
        trained = (miniature.card().get("continuation") if preset == "miniature"
                   else preset is None and trained_for_continuation(args.dit))
        mode = "on" if trained else "fallback"
        print(f"{args.frames} frames: beyond one run of {args.run_frames}, made by "
              f"{'continuation' if mode == 'on' else 'the chained image-to-video fallback'}")
    else:
        mode = args.continuation
    return ContinuationSettings(args.new_frames, args.context_frames, args.run_frames, fallback=mode == "fallback",
                                match=not args.no_match)


def _render_long(stack: Stack, args: argparse.Namespace, device: torch.device, cache: CacheSettings,
                 settings: ContinuationSettings, stats: CacheStats | None = None) -> torch.Tensor:
    """Frames of a video longer than one run: the first run, then continuations, decoded as they come."""
    video = VideoSettings(args.width, args.height, args.frames, args.seed, args.fps)
    sampler = SamplerSettings(args.steps, args.shift, args.cfg, args.fourier_ratio, cache=cache)
    with stack.vae_place.active():
        start = encode_start(stack.vae, stack.image, args.width, args.height, args.fourier_ratio, device)
        chunks = []
        for chunk in generate_long(stack.dit, stack.vae, start, stack.context, stack.negative, video, sampler,
                                   settings, print_progress("sampling"), stats):
            chunks.append((chunk * 255).round().to(torch.uint8))  # 4x less memory than float frames
            print(f"chunk {len(chunks)}: {sum(len(c) for c in chunks)}/{args.frames} frames")
    return torch.cat(chunks).float() / 255


def _render(stack: Stack, args: argparse.Namespace, device: torch.device, cache: CacheSettings,
            stats: CacheStats | None = None, quiet: bool = False,
            parallel: Parallel | None = None) -> torch.Tensor | None:
    """Frames [T, H, W, 3] of one sampling run of the stack under `cache` (None on the helpers of a parallel run)."""
    video = VideoSettings(args.width, args.height, args.frames, args.seed, args.fps)
    sampler = SamplerSettings(args.steps, args.shift, args.cfg, args.fourier_ratio, cache=cache)
    with stack.vae_place.active():
        start = encode_start(stack.vae, stack.image, args.width, args.height, args.fourier_ratio, device)
    latents = generate_latents(stack.dit, stack.vae, None, stack.context, stack.negative, video, sampler,
                               progress=None if quiet else print_progress("sampling"), start=start, stats=stats,
                               parallel=parallel)
    with stack.vae_place.active():
        return decode_shared(stack.vae, latents.to(device), parallel, args.vae_tile, VAE_TILE_OVERLAP,
                             None if quiet else print_progress("decoding"))


def _build(args: argparse.Namespace, preset: str | None, device: torch.device, image: torch.Tensor,
           parallel: Parallel | None = None) -> Stack:
    """The models of the run on `device`; under --fsdp the DiT loads on the CPU and is sharded here."""
    build = {"miniature": _miniature_stack, "tiny": _tiny_stack, None: _file_stack}[preset]
    stack = build(args, device, get_attention(args.attention, device, log=print), image)
    if args.fsdp:
        shard_dit(stack.dit, parallel)
    if args.fp8_matmul:
        print(enable_fp8_matmul(stack.dit, device))
    if args.compile:
        compile_blocks(stack.dit, log=print)
    return stack


def _stack_for(args: argparse.Namespace) -> tuple[Stack, str | None, Path, torch.device]:
    preset, out, device, image = _prepare(args)
    return _build(args, preset, device, image), preset, out, device


def generate_command(args: argparse.Namespace) -> Path | None:
    preset, out, device, image = _prepare(args)
    if not parallel_wanted(args):
        return _generate(args, preset, out, device, image)
    parallel = start_parallel(args.sequence_parallel, 2 if args.cfg_parallel else 1, device.type, args.dist_timeout)
    try:
        with parallel.main_prints():
            print(f"parallel run: {parallel.describe()}" + (", DiT sharded (FSDP2)" if args.fsdp else ""))
            written = _generate(args, preset, out, parallel.device, image, parallel)
    except UniWorldError:
        raise
    except Exception as exc:  # a collective that failed: say which process and why, and end without waiting
        raise ProcessFailure.of(parallel, exc) from exc
    parallel.close()
    return written


def _generate(args: argparse.Namespace, preset: str | None, out: Path, device: torch.device, image: torch.Tensor,
              parallel: Parallel | None = None) -> Path | None:
    """Load, sample, decode and (on the main process) write; every process of a parallel run calls it."""
    stack = _build(args, preset, device, image, parallel)
    if preset == "miniature":
        print(f"miniature model: '{args.prompt}', style {args.style or 'none'}, image {args.image or 'procedural'}")
    print(f"sampling: {args.steps} steps, shift {args.shift:g}, cfg {args.cfg:g}, {args.width}x{args.height}, "
          f"{args.frames} frames")
    started, stats = time.perf_counter(), CacheStats()
    if args.frames > args.run_frames:
        frames = _render_long(stack, args, device, args.cache_settings, _continuation(args, preset), stats)
    else:
        frames = _render(stack, args, device, args.cache_settings, stats, parallel=parallel)
    if args.cache_settings.active:
        print(f"cache {args.cache}: {stats.summary()}")
    if frames is None:  # not the main process: it only helped
        return None
    if args.compile:
        print(stack.dit.compile_state.summary())
    written = _write(frames, out, args.fps)
    print(f"wrote {written} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}) "
          f"in {time.perf_counter() - started:.1f} s on {device}")
    return written


def calibrate_command(args: argparse.Namespace) -> Path:
    """Choose the `wan` cache schedule for this model on this input and write it beside the DiT file."""
    if parallel_wanted(args):
        raise InputError("cache-calibrate with --sequence-parallel/--cfg-parallel/--fsdp", "one process: "
                         "calibration times runs against each other", "Drop the parallel options.")
    stack, preset, _, device = _stack_for(args)
    target = Path(str(args.dit or miniature.model_dir() / miniature.FILES["dit"]) + SCHEDULE_SUFFIX)
    print(f"calibrating the wan cache on '{args.prompt}' ({args.steps} steps): at least {args.min_psnr:g} dB "
          "PSNR against the uncached video")
    chosen, table = choose_wan_schedule(lambda cache: _render(stack, args, device, cache, quiet=True),
                                        args.min_psnr)
    for row in table:
        print(f"  {row}")
    target.write_text(json.dumps(chosen, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {target}: {chosen['schedule']}")
    return target


def _write(frames: torch.Tensor, out: Path, fps: int) -> Path:
    """The video as asked (.webp or .mp4); a .webp also gets an .mp4 beside it when PyAV is installed."""
    if out.suffix.lower() == ".mp4":
        return save_mp4(frames, out, fps)
    written = save_webp(frames, out, fps)
    if av_available():
        print(f"wrote {save_mp4(frames, out.with_suffix('.mp4'), fps)}")
    return written


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code = {"generate": generate_command, "inspect": inspect_command, "convert": convert_command,
                "quantize": quantize_command, "cache-calibrate": calibrate_command}[args.command](args)
    except ProcessFailure as exc:
        print_error(str(exc))
        return 1
    except UniWorldError as exc:
        print_error(str(exc))
        return 2
    except KeyboardInterrupt:
        print_error("interrupted; nothing more was written")
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
