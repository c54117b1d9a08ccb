"""Command line: `python -m uniworld_core generate ...` (see --help)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from .conditioning import BUILTIN_STYLES, StyleSpec, all_styles, umt5_conditioner, vlm_conditioner
from .device import DTYPES, pick_device, resolve_dtype
from .errors import UniWorldError
from .media import av_available, demo_image, load_image, save_mp4, save_webp
from .memory import AUTO, Placement, place_dit
from .model import get_attention
from .presets import miniature
from .presets.tiny import TINY_NOTICE, tiny_context, tiny_stack
from .progress import print_progress
from .sampling import REPORT, TINY, SamplerSettings, VideoSettings, decode_frames, encode_start, generate_latents
from .weights import OUR_TYPES, convert_file, inspect_file, load, quantize_file

GIB = 2**30
SETTINGS = ("width", "height", "frames", "steps", "cfg", "shift", "fourier_ratio", "fps")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uniworld_core")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="image (+ context features) -> stylized video")
    gen.add_argument("--preset", choices=["miniature", "tiny"], help="without --dit: the built-in miniature "
                     "model trained on the toy world (default when installed), or random-weight 'tiny' "
                     "(proves the pipeline only)")
    gen.add_argument("--dit", help="DiT weights (.safetensors/.pt/.gguf; official, ComfyUI or diffusers keys)")
    gen.add_argument("--vae", help="Wan2.1 VAE weights")
    gen.add_argument("--vlm", help="Qwen2.5-VL folder or single file (Uniworld-OSP2.0); needs --adapter")
    gen.add_argument("--adapter", help="the encoder adapter (fc1/fc2) that goes with --vlm")
    gen.add_argument("--umt5", help="umT5 file or folder (FlashI2V-1.3B)")
    gen.add_argument("--tokenizer", help="tokenizer folder, when --vlm/--umt5 is a single file")
    gen.add_argument("--prompt", help="what happens in the video (miniature default: the example's caption)")
    gen.add_argument("--negative", help="negative prompt (default: the official one, style-aware)")
    gen.add_argument("--style", help=f"one of: {', '.join(s.name for s in BUILTIN_STYLES)}")
    gen.add_argument("--style-strength", type=float, default=1.0)
    gen.add_argument("--context", help="precomputed features instead: safetensors with 'context' "
                     "[1,L,text_dim] and optionally 'negative_context'")
    gen.add_argument("--image", help="conditioning image (default: the miniature model's example photo, "
                     "or a procedural test picture for 'tiny')")
    gen.add_argument("--out", default="outputs/uniworld.webp", help="output .webp path "
                     "(an .mp4 is written beside it when PyAV is installed)")
    _setting_options(gen)
    gen.add_argument("--seed", type=int, default=REPORT.seed)
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, npu")
    gen.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16")
    gen.add_argument("--attention", default="auto", help="auto, sdpa, flash_attn, sage, npu")
    _memory_options(gen)
    ins = sub.add_parser("inspect", help="say what a weight file is (format, kind, config, dtypes)")
    ins.add_argument("file")
    ins.add_argument("--json", action="store_true", help="print the report as JSON")
    conv = sub.add_parser("convert", help="rewrite a DiT/VAE file as one official-layout safetensors")
    conv.add_argument("file")
    conv.add_argument("out")
    conv.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    quant = sub.add_parser("quantize", help="write a DiT as GGUF (Q4_K, Q8_0, ...) or fp8 safetensors")
    quant.add_argument("file")
    quant.add_argument("out")
    quant.add_argument("--type", required=True, choices=OUR_TYPES)
    return parser


def _setting_options(gen: argparse.ArgumentParser) -> None:
    """Geometry and sampling settings; unset ones come from the model's defaults."""
    mini = miniature.DEFAULTS
    for name, kind, meaning in (("width", int, "frame width in pixels"), ("height", int, "frame height"),
                                ("frames", int, "frame count, 4k+1"), ("steps", int, "Euler steps"),
                                ("cfg", float, "classifier-free guidance scale"),
                                ("shift", float, "flow-matching time shift"),
                                ("fourier-ratio", float, "share of spectral energy left in the low band"),
                                ("fps", int, "frames per second of the written video")):
        key = name.replace("-", "_")
        gen.add_argument(f"--{name}", type=kind, help=f"{meaning} (default: {getattr(REPORT, key):g} for "
                         f"real weights, {getattr(mini, key):g} for the miniature, {getattr(TINY, key):g} "
                         "for tiny)")


def _memory_options(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--vram-budget", type=float, help="GiB of device memory the DiT may use; blocks that do "
                     "not fit stay in CPU RAM and are streamed in just in time (default: the free memory)")
    gen.add_argument("--blocks-to-swap", type=int, default=AUTO, help="DiT blocks kept in CPU RAM: -1 = "
                     "planned from the budget (default), 0 = all on the device, N = the first N")
    gen.add_argument("--prefetch-blocks", type=int, default=1, help="swapped blocks copied ahead of use")
    gen.add_argument("--offload", action="store_true", help="keep the text encoder and the VAE in CPU RAM "
                     "between uses (they visit the device only while they run)")


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
        raise UniWorldError(f"the style '{args.style}'", f"one of {', '.join(styles)}")
    return StyleSpec(styles[args.style], args.style_strength)


def _image(args: argparse.Namespace):
    return load_image(args.image) if args.image else demo_image(args.width, args.height, args.seed)


def _fill(args: argparse.Namespace, defaults) -> None:
    for key in SETTINGS:
        if getattr(args, key) is None:
            setattr(args, key, getattr(defaults, key))


def _preset(args: argparse.Namespace) -> str | None:
    """'miniature', 'tiny' or None (files given)."""
    if args.dit is not None:
        return None
    if args.preset is not None:
        return args.preset
    if miniature.available():
        return "miniature"
    print("The built-in miniature model is not installed; running the random-weight 'tiny' preset.")
    return "tiny"


def _swapping(args: argparse.Namespace, device: torch.device) -> bool:
    """Whether the DiT may be block-swapped (then it is loaded to the CPU and placed)."""
    return args.blocks_to_swap > 0 or (args.blocks_to_swap == AUTO and (device.type != "cpu"
                                                                         or args.vram_budget is not None))


def _place(args: argparse.Namespace, dit: torch.nn.Module, device: torch.device) -> None:
    budget = None if args.vram_budget is None else int(args.vram_budget * GIB)
    grid = (1 + (args.frames - 1) // 4, args.height // 8, args.width // 8)
    placed = place_dit(dit, device, budget, args.blocks_to_swap, args.prefetch_blocks, grid)
    print(f"DiT placement: {placed.summary()}")


def _vae_placement(args: argparse.Namespace, vae: torch.nn.Module, device: torch.device) -> Placement:
    return Placement(vae, device, args.offload)


def _conditioning(args, image, device, dtype):
    """(positive, negative) context from --context, --vlm + --adapter, or --umt5."""
    if args.context:
        features = load_file(args.context)
        return features["context"], features.get("negative_context")
    if args.vlm and args.adapter:
        conditioner = vlm_conditioner(args.vlm, args.adapter, args.tokenizer, dtype, device, args.offload)
    elif args.umt5:
        conditioner = umt5_conditioner(args.umt5, args.tokenizer, dtype, device, args.offload)
    else:
        raise UniWorldError("--dit without a text encoder", "--vlm with --adapter, --umt5, or --context",
                            "Uniworld-OSP2.0 reads the prompt with Qwen2.5-VL; FlashI2V-1.3B with umT5.")
    return conditioner.encode(image, args.prompt, _style_spec(args, all_styles()), args.negative)


def _miniature_stack(args, device, attention) -> Stack:
    """The miniature model, its defaults and, without --image/--prompt, its first example."""
    swapping = _swapping(args, device)
    model = miniature.load_miniature(device=torch.device("cpu") if swapping else device, attention=attention,
                                     encoder_device=device)
    example = (miniature.examples() or [{}])[0]
    if args.image is None and args.prompt is None:
        args.image, args.prompt = example.get("image"), example.get("prompt")
        args.style = args.style or example.get("style")
    args.prompt = args.prompt or ""
    _fill(args, miniature.defaults())
    image = _image(args)
    context, negative = model.conditioner.encode(image, args.prompt, _style_spec(args, model.styles()),
                                                 args.negative)
    if swapping:
        _place(args, model.dit, device)
    return Stack(model.dit, model.vae, _vae_placement(args, model.vae, device), image, context, negative)


def _tiny_stack(args, device, attention) -> Stack:
    _fill(args, TINY)
    print(TINY_NOTICE)
    swapping = _swapping(args, device)
    dit, vae = tiny_stack(args.seed, torch.device("cpu") if swapping else device,
                          resolve_dtype(args.precision, device), attention)
    if swapping:
        _place(args, dit, device)
    context, negative = tiny_context(dit.cfg.text_dim, dit.cfg.text_len, args.seed)
    return Stack(dit, vae, _vae_placement(args, vae, device), _image(args), context, negative)


def _file_stack(args, device, attention) -> Stack:
    _fill(args, REPORT)
    args.prompt = args.prompt or ""
    if args.vae is None:
        raise UniWorldError("--dit without --vae", "a Wan2.1 VAE file as well")
    dtype = resolve_dtype(args.precision, device)
    swapping = _swapping(args, device)
    dit = load(args.dit, "dit", "cpu" if swapping else device, dtype, attention).model
    if swapping:
        _place(args, dit, device)
    vae = load(args.vae, "vae", "cpu", torch.float32 if device.type == "cpu" else dtype).model
    image = _image(args)
    context, negative = _conditioning(args, image, device, dtype)
    return Stack(dit, vae, _vae_placement(args, vae, device), image, context, negative)


def generate_command(args: argparse.Namespace) -> Path:
    preset = _preset(args)
    device = pick_device(args.device)
    attention = get_attention(args.attention, device)
    build = {"miniature": _miniature_stack, "tiny": _tiny_stack, None: _file_stack}[preset]
    stack = build(args, device, attention)
    if preset == "miniature":
        print(f"miniature model: '{args.prompt}', style {args.style or 'none'}, image {args.image or 'procedural'}")
    video = VideoSettings(args.width, args.height, args.frames, args.seed, args.fps)
    sampler = SamplerSettings(args.steps, args.shift, args.cfg, args.fourier_ratio)
    print(f"sampling: {args.steps} steps, shift {args.shift:g}, cfg {args.cfg:g}, {args.width}x{args.height}, "
          f"{args.frames} frames")
    started = time.perf_counter()
    with stack.vae_place.active():
        start = encode_start(stack.vae, stack.image, args.width, args.height, args.fourier_ratio, device)
    latents = generate_latents(stack.dit, stack.vae, None, stack.context, stack.negative, video, sampler,
                               progress=print_progress("sampling"), start=start)
    with stack.vae_place.active():
        frames = decode_frames(stack.vae, latents.to(device), progress=print_progress("decoding"))
    out = save_webp(frames, Path(args.out).with_suffix(".webp"), args.fps)
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}) "
          f"in {time.perf_counter() - started:.1f} s on {device}")
    if av_available():
        print(f"wrote {save_mp4(frames, out.with_suffix('.mp4'), args.fps)}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = {"generate": generate_command, "inspect": inspect_command, "convert": convert_command,
                "quantize": quantize_command}[args.command](args)
    except UniWorldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
