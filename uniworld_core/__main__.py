"""Command line: `python -m uniworld_core generate ...` (see --help)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from . import miniature
from .attention import get_attention
from .checkpoints import convert_file, inspect_file, load, load_dit, load_vae
from .conditioning import Conditioner, StyleSpec
from .demo import TINY_NOTICE, tiny_context, tiny_stack
from .device import DTYPES, pick_device, resolve_dtype
from .errors import UniWorldError
from .media import av_available, demo_image, load_image, save_mp4, save_webp
from .pipeline import VideoSettings, decode_frames, generate_latents
from .progress import print_progress
from .quantize import OUR_TYPES, quantize_file
from .sampler import SamplerSettings
from .styles import BUILTIN_STYLES, all_styles
from .umt5 import UMT5TextEncoder, load_umt5_tokenizer
from .vlm import VLMEncoder, encoder_settings, load_adapter, load_vlm

# Defaults per mode: the report's settings for real weights, a quick run for tiny.
REAL_DEFAULTS = dict(width=832, height=480, frames=49, steps=50, cfg=5.0, shift=7.0)
TINY_DEFAULTS = dict(width=160, height=96, frames=17, steps=8, cfg=5.0, shift=7.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m uniworld_core")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="image (+ context features) -> stylized video")
    gen.add_argument("--preset", choices=["miniature", "tiny"], help="without --dit: the built-in miniature "
                     "model trained on the toy world (default when installed), or random-weight 'tiny' "
                     "(proves the pipeline only)")
    gen.add_argument("--dit", help="DiT weights (.safetensors/.pt; official, ComfyUI or diffusers keys)")
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
    for name in ("width", "height", "frames", "steps"):
        gen.add_argument(f"--{name}", type=int)
    gen.add_argument("--cfg", type=float, help="classifier-free guidance scale (default 5; the miniature "
                     "model's card says its own)")
    gen.add_argument("--shift", type=float, help="flow-matching time shift (default 7; miniature: its card's)")
    gen.add_argument("--fourier-ratio", type=float, default=0.1, help="low-frequency energy ratio")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--fps", type=int, default=16)
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, npu")
    gen.add_argument("--precision", default="auto", help="auto, fp32, bf16, fp16")
    gen.add_argument("--attention", default="auto", help="auto, sdpa, flash_attn, sage, npu")
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


def quantize_command(args: argparse.Namespace) -> None:
    out = quantize_file(args.file, args.out, args.type)
    print(f"wrote {out} ({args.type}, {out.stat().st_size / 2**20:.1f} MiB)")


def inspect_command(args: argparse.Namespace) -> None:
    report = inspect_file(args.file)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    for key, value in report.items():
        if isinstance(value, list) and len(value) > 8:
            value = f"{len(value)}: {value[:8]} ..."
        print(f"{key:>16}: {value}")


def convert_command(args: argparse.Namespace) -> None:
    out = convert_file(args.file, args.out, DTYPES[args.dtype])
    print(f"wrote {out} ({inspect_file(out)['kind']}, {args.dtype}, official keys)")


def _conditioning(args, image, device, dtype):
    """(positive, negative) context from --context, --vlm + --adapter, or --umt5."""
    if args.context:
        features = load_file(args.context)
        return features["context"], features.get("negative_context")
    if args.vlm and args.adapter:
        model, processor = load_vlm(args.vlm, dtype, args.tokenizer)
        adapter = load_adapter(args.adapter, model.config.text_config.hidden_size)
        encoder = VLMEncoder(model, processor, adapter, compute=device, **encoder_settings(args.vlm))
    elif args.umt5:
        from pathlib import Path as _Path

        model = load(args.umt5, "umt5", device, dtype).model
        encoder = UMT5TextEncoder(model, load_umt5_tokenizer(args.tokenizer or _Path(args.umt5)), compute=device)
    else:
        raise UniWorldError("--dit without a text encoder", "--vlm with --adapter, --umt5, or --context",
                            "Uniworld-OSP2.0 reads the prompt with Qwen2.5-VL; FlashI2V-1.3B with umT5.")
    return Conditioner(encoder).encode(image, args.prompt, _style_spec(args, all_styles()), args.negative)


def _style_spec(args: argparse.Namespace, styles: dict) -> StyleSpec:
    """--style / --style-strength as a StyleSpec; an unknown name is refused with the known ones."""
    if not args.style:
        return StyleSpec()
    if args.style not in styles:
        raise UniWorldError(f"the style '{args.style}'", f"one of {', '.join(styles)}")
    return StyleSpec(styles[args.style], args.style_strength)


def _image(args: argparse.Namespace):
    return load_image(args.image) if args.image else demo_image(args.width, args.height, args.seed)


def _models(args, device, dtype, attention):
    if args.vae is None:
        raise UniWorldError("--dit without --vae", "a Wan2.1 VAE file as well")
    dit = load_dit(args.dit, device, dtype, attention)
    vae = load_vae(args.vae, device, torch.float32 if device.type == "cpu" else dtype)
    return dit, vae


def _fill(args: argparse.Namespace, defaults: dict) -> None:
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


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


def _miniature_inputs(args, device, attention):
    """(dit, vae, image, context, negative) of the miniature model, defaults from its first example."""
    model = miniature.load_miniature(device=device, attention=attention)
    example = (miniature.examples() or [{}])[0]
    if args.image is None and args.prompt is None:
        _fill(args, {"image": example.get("image"), "prompt": example.get("prompt"), "style": example.get("style")})
    _fill(args, {**miniature.defaults(), "prompt": ""})
    image = _image(args)
    context, negative = model.conditioner.encode(image, args.prompt, _style_spec(args, model.styles()), args.negative)
    return model.dit, model.vae, image, context, negative


def generate_command(args: argparse.Namespace) -> Path:
    preset = _preset(args)
    device = pick_device(args.device)
    attention = get_attention(args.attention, device)
    if preset == "miniature":
        dit, vae, image, context, negative = _miniature_inputs(args, device, attention)
        print(f"miniature model: '{args.prompt}', style {args.style or 'none'}, image {args.image or 'procedural'}")
    elif preset == "tiny":
        _fill(args, TINY_DEFAULTS)
        print(TINY_NOTICE)
        dit, vae = tiny_stack(args.seed, device, resolve_dtype(args.precision, device), attention)
        image = _image(args)
        context, negative = tiny_context(dit.cfg.text_dim, dit.cfg.text_len, args.seed)
    else:
        _fill(args, {**REAL_DEFAULTS, "prompt": ""})
        dtype = resolve_dtype(args.precision, device)
        dit, vae = _models(args, device, dtype, attention)
        image = _image(args)
        context, negative = _conditioning(args, image, device, dtype)
    video = VideoSettings(args.width, args.height, args.frames, args.seed, args.fps)
    sampler = SamplerSettings(args.steps, args.shift, args.cfg, args.fourier_ratio)
    print(f"sampling: {args.steps} steps, shift {args.shift:g}, cfg {args.cfg:g}, {args.width}x{args.height}, "
          f"{args.frames} frames")
    started = time.perf_counter()
    latents = generate_latents(dit, vae, image, context, negative, video, sampler,
                               progress=print_progress("sampling"))
    frames = decode_frames(vae, latents, progress=print_progress("decoding"))
    out = save_webp(frames, Path(args.out).with_suffix(".webp"), args.fps)
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}) "
          f"in {time.perf_counter() - started:.1f} s on {device}")
    if av_available():
        print(f"wrote {save_mp4(frames, out.with_suffix('.mp4'), args.fps)}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"generate": generate_command, "inspect": inspect_command, "convert": convert_command,
         "quantize": quantize_command}[args.command](args)
    except UniWorldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
