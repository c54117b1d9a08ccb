"""Command-line arguments: every value and the output path checked before any model is loaded.

A bad argument is one line on stderr and exit code 2, with what was given,
what is allowed and what to do; nothing is loaded and no existing file is
touched. The same ranges back the ComfyUI widgets (nodes/), so the two agree.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from . import __version__
from .conditioning import BUILTIN_STYLES
from .device import pick_device
from .errors import InputError
from .media import av_available, load_image
from .memory import AUTO
from .parallel import DEFAULT_TIMEOUT_S, launched
from .presets import miniature
from .sampling.defaults import LIMITS, REPORT, TINY, Limits
from .weights import OUR_TYPES

OUT_SUFFIXES = (".webp", ".mp4")
DEFAULT_OUT_NAME = "uniworld.webp"
DEVICE_TYPES = ("auto", "cpu", "cuda", "mps", "npu")


# What every numeric option may be: the settings' limits (shared with the nodes' widgets) and the memory ones.
RANGES = {**LIMITS, "vram_budget": Limits(1e-6, 1e6, "GiB"), "prefetch_blocks": Limits(0, 64, "blocks"),
          "blocks_to_swap": Limits(-1, 1000, "blocks (-1 = planned)"),
          "sequence_parallel": Limits(1, 1024, "processes"), "vae_tile": Limits(0, 4096, "latent pixels (0 = whole)"),
          "dist_timeout": Limits(1, 86400, "seconds"),
          # longer than one run: the first run, then continuations (memory per run stays the same)
          "frames": Limits(5, 4097, "frames, of the form 4k+1"),
          "run_frames": Limits(5, 4097, "frames of one run, of the form 4k+1"),
          "context_frames": Limits(1, 64, "latent frames"), "new_frames": Limits(1, 64, "latent frames")}
VAE_TILE_OVERLAP = 8  # latent pixels blended between neighbouring tiles (the VAE Decode node's default)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (and exit code 2), pointing at --help."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def check_range(name: str, value) -> None:
    """An InputError when `value` is outside the setting's range."""
    allowed = RANGES[name]
    if value is not None and not allowed.low <= value <= allowed.high:
        flag = "--" + name.replace("_", "-")
        raise InputError(f"{flag} {value:g}", f"{allowed.low:g} to {allowed.high:g} ({allowed.meaning})")


def check_settings(args: argparse.Namespace) -> None:
    """Every number of a generate run, and the combinations the ranges cannot express."""
    for name in RANGES:
        check_range(name, getattr(args, name, None))
    for name in ("frames", "run_frames"):
        value = getattr(args, name, None)
        if value is not None and (value - 1) % 4:
            raise InputError(f"--{name.replace('_', '-')} {value}", "a frame count of the form 4k+1 (e.g. 17, 33, "
                             "49, 81)", f"Use {value - (value - 1) % 4} or {value - (value - 1) % 4 + 4}.")
    for name in ("width", "height"):
        if getattr(args, name) % 16:
            value = getattr(args, name)
            raise InputError(f"--{name} {value}", "a multiple of 16 (the VAE's 8x and the DiT's 2x2 patches)",
                             f"Use {value // 16 * 16 or 16} or {value // 16 * 16 + 16}.")


def parallel_wanted(args: argparse.Namespace) -> bool:
    """Whether the run shares its work among processes (--sequence-parallel N > 1, --cfg-parallel, --fsdp)."""
    return args.sequence_parallel > 1 or args.cfg_parallel or args.fsdp


def check_parallel(args: argparse.Namespace, cache_active: bool = False) -> None:
    """The parallel options against each other and against how the command was launched (torchrun or not)."""
    if args.vae_tile and args.vae_tile <= VAE_TILE_OVERLAP:
        raise InputError(f"--vae-tile {args.vae_tile}", f"0 (whole frames) or more than the {VAE_TILE_OVERLAP} "
                         "latent pixels tiles overlap by", "Try --vae-tile 32.")
    if args.cfg_parallel and args.cfg == 1:
        raise InputError("--cfg-parallel with --cfg 1", "guidance above 1: CFG parallel runs the conditional and "
                         "unconditional branches on two processes", "Drop --cfg-parallel or raise --cfg.")
    if args.cfg_parallel and cache_active:
        raise InputError("--cfg-parallel with --cache", "one of the two: the caches decide per guidance branch in "
                         "one process, CFG parallel puts the branches on two", "Use --sequence-parallel instead.")
    if args.fsdp and (args.blocks_to_swap > 0 or args.vram_budget is not None):
        raise InputError("--fsdp with --blocks-to-swap/--vram-budget", "one of the two: both decide where the DiT's "
                         "blocks live", "Under --fsdp each process already keeps only 1/N of the weights.")
    cfg = 2 if args.cfg_parallel else 1
    wanted, launch = parallel_wanted(args), launched()
    world = launch[2] if launch else 1
    flags = f"--sequence-parallel {args.sequence_parallel}" + (" --cfg-parallel" if args.cfg_parallel else "")
    if wanted and launch is None:
        raise InputError(f"{flags} in a single process", "a launch by torchrun (or accelerate launch)",
                         f"Run torchrun --nproc-per-node {args.sequence_parallel * cfg} -m uniworld_core generate "
                         f"{flags} ...")
    if not wanted and world > 1:
        raise InputError(f"a launch of {world} processes without --sequence-parallel or --cfg-parallel",
                         "one process, or options that share the work", f"Add --sequence-parallel {world}.")
    if wanted and world != args.sequence_parallel * cfg:
        raise InputError(f"{world} processes for {flags}", f"exactly {args.sequence_parallel * cfg} (sequence x CFG)",
                         f"Launch torchrun --nproc-per-node {args.sequence_parallel * cfg}"
                         + (f", or use --sequence-parallel {world // cfg}." if world % cfg == 0 else "."))
    if wanted and ":" in args.device:
        raise InputError(f"--device {args.device} with several processes", "a device type without a number "
                         "(cuda, npu, cpu)", "Each process takes the device numbered by its LOCAL_RANK.")


def output_path(out: str) -> Path:
    """Where the video goes: `out` itself (.webp or .mp4), or a default name inside an existing folder."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        path = path / DEFAULT_OUT_NAME
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise InputError(f"--out {out}", "a .webp or .mp4 file name (or an existing folder)",
                         f"For example --out {path.with_suffix('.webp')}.")
    if path.suffix.lower() == ".mp4" and not av_available():
        raise InputError(f"--out {out} without PyAV", "PyAV for MP4 output", 'pip install -e ".[video]", or use .webp.')
    _check_writable(path)
    return path


def _check_writable(path: Path) -> None:
    ancestor = path.parent
    while not ancestor.exists():  # the folders that will be created
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise InputError(f"the output folder '{ancestor}', which is a file", "a folder to write the video into",
                         "Choose another --out.")
    if not os.access(ancestor, os.W_OK):
        raise InputError(f"the output folder '{ancestor}', which is not writable", "a writable folder",
                         "Choose another --out.")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"the output file '{path}', which is read-only", "a writable file", "Choose another --out.")


def check_files(args: argparse.Namespace) -> None:
    """Given files exist, and the combinations of files make a model (before anything is read)."""
    for flag in ("dit", "vae", "vlm", "adapter", "umt5", "tokenizer", "context", "image"):
        value = getattr(args, flag, None)
        if value is not None and not Path(value).exists():
            raise InputError(f"--{flag} {value}, which does not exist", "an existing file or folder",
                             "Check the path.")
    if args.dit is not None:
        if args.vae is None:
            raise InputError("--dit without --vae", "a Wan2.1 VAE file as well (--vae)")
        if not (args.context or (args.vlm and args.adapter) or args.umt5):
            raise InputError("--dit without a text encoder", "--vlm with --adapter, --umt5, or --context",
                             "Uniworld-OSP2.0 reads the prompt with Qwen2.5-VL; FlashI2V-1.3B with umT5.")
    if bool(args.vlm) != bool(args.adapter):
        raise InputError("--vlm and --adapter apart", "both: the adapter maps the VLM's features to the DiT")


def check_device(name: str) -> torch.device:
    """A device string torch understands and this machine has."""
    if name == "auto":
        return pick_device("auto")
    kind = name.split(":")[0]
    if kind not in DEVICE_TYPES:
        raise InputError(f"--device {name}", f"one of {', '.join(DEVICE_TYPES)} (optionally with an index, cuda:1)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name} on a machine without CUDA", "cpu or auto")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name} on a machine without MPS", "cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"--device {name}", "a device such as cpu, cuda, cuda:1") from exc


def check_image(path: str | None) -> torch.Tensor | None:
    """The conditioning image, read now: an unreadable or oversized image fails before any model loads."""
    return load_image(path) if path else None


def available_memory(device: torch.device) -> int | None:
    """Bytes the run may allocate on `device` (free device memory, or the RAM available to this process)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                info = dict(line.split(":", 1) for line in f)
            return int(info["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return None
    return None


def print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m uniworld_core", description="Uniworld-OSP2.0 / FlashI2V image to "
                           "stylized video: generate, and inspect, convert or quantise weight files.")
    parser.add_argument("--version", action="version", version=f"uniworld-osp2 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    gen = sub.add_parser("generate", help="image (+ prompt, style) -> stylized video",
                         description="Animate an image into a stylized video. Without --dit the built-in "
                         "miniature model runs (its card's 64x64, 17 frames, 30 steps); with files the report's "
                         "832x480, 49 frames, 50 steps.")
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
    gen.add_argument("--style-strength", type=float, default=1.0, help="0 = no style, 1 = the styled prompt "
                     "(default 1)")
    gen.add_argument("--context", help="precomputed features instead: safetensors with 'context' "
                     "[1,L,text_dim] and optionally 'negative_context'")
    gen.add_argument("--image", help="conditioning image (default: the miniature model's example photo, "
                     "or a procedural test picture for 'tiny')")
    gen.add_argument("--out", default="outputs/uniworld.webp", help="output .webp or .mp4 file, or an existing "
                     "folder (default outputs/uniworld.webp; an .mp4 is written beside a .webp when PyAV is "
                     "installed)")
    _setting_options(gen)
    gen.add_argument("--seed", type=int, default=REPORT.seed, help=f"noise seed (default {REPORT.seed}): the same "
                     "seed gives the same video on any device")
    gen.add_argument("--device", default="auto", help="auto (default: CUDA, NPU, MPS, else CPU), cpu, cuda, "
                     "cuda:1, mps, npu")
    gen.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                     help="auto (default: bf16 on accelerators, fp32 on the CPU)")
    gen.add_argument("--attention", default="auto",
                     choices=["auto", "measure", "sdpa", "chunked", "flash_attn", "sage", "npu"],
                     help="attention kernel (default auto: SDPA on the CPU, flash-attn on CUDA when installed, "
                     "the NPU kernel on Ascend; measure: time SDPA/chunked/flash-attn on first use and keep "
                     "the fastest)")
    gen.add_argument("--compile", action="store_true", help="compile the DiT block with torch.compile "
                     "(once per video size; falls back to eager with a message when the compiler fails)")
    gen.add_argument("--fp8-matmul", action="store_true", help="multiply fp8 (e4m3) weights in fp8 on the "
                     "GPU's tensor cores (compute capability 8.9+: Ada, Hopper), rounding each token's input to "
                     "fp8 too: faster, slightly less exact; other layers and devices keep upcasting the weights")
    _memory_options(gen)
    _long_video_options(gen)
    gen.add_argument("--cache", default="off", help="sampling cache: off (default), adaptive[:threshold] (skips "
                     "forwards while the output changes little; threshold default 0.2), wan[:attention:uncond "
                     "intervals[:attention start:uncond start]] (the Wan report's attention and unconditional "
                     "caches; a schedule chosen by cache-calibrate is read from <dit>.cache.json), or both: "
                     "adaptive+wan")
    _parallel_options(gen)
    cal = sub.add_parser("cache-calibrate", help="choose the wan cache schedule for a model and write it beside "
                         "its DiT file (<dit>.cache.json), which --cache wan then reads")
    for action in gen._actions[1:]:  # the generate options, so the same model and input can be given
        cal._add_action(action)
    cal.add_argument("--min-psnr", type=float, default=30.0, help="the least PSNR (dB) against the uncached video "
                     "a schedule must keep (default 30)")
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
    mini = miniature.defaults()  # this build's card (read when --help is built)
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


def _long_video_options(gen: argparse.ArgumentParser) -> None:
    """How a video longer than one run is made (docs/long_video.md)."""
    gen.add_argument("--continuation", default="auto", choices=["auto", "on", "fallback"],
                     help="beyond one run's frames (--run-frames): 'on' continues the video "
                     "from its last latent frames (weights trained for it), 'fallback' chains image-to-video "
                     "runs from the last frame with colour matching; auto (default) picks 'on' when the model "
                     "says it was trained for continuation")
    gen.add_argument("--run-frames", type=int, help="frames of one sampling run: a longer --frames is made of "
                     "continuations (default: the miniature's 17; 81 for weight files, Wan2.1's training length)")
    gen.add_argument("--context-frames", type=int, help="latent frames of the video so far that each "
                     "continuation sees (default 4; the miniature: its card's)")
    gen.add_argument("--new-frames", type=int, help="latent frames each continuation adds (default 9 = 36 "
                     "frames; the miniature: its card's)")
    gen.add_argument("--no-match", action="store_true", help="long videos: keep each chunk's colours as sampled "
                     "(by default they are matched to what the chunk continues, against drift; turn it off for "
                     "videos whose lighting should change)")


def _memory_options(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--vram-budget", type=float, help="GiB of device memory the DiT may use; blocks that do "
                     "not fit stay in CPU RAM and are streamed in just in time (default: the free memory)")
    gen.add_argument("--blocks-to-swap", type=int, default=AUTO, help="DiT blocks kept in CPU RAM: -1 = "
                     "planned from the budget (default), 0 = all on the device, N = the first N")
    gen.add_argument("--prefetch-blocks", type=int, default=1, help="swapped blocks copied ahead of use "
                     "(default 1)")
    gen.add_argument("--offload", action="store_true", help="keep the text encoder and the VAE in CPU RAM "
                     "between uses (they visit the device only while they run)")


def _parallel_options(gen: argparse.ArgumentParser) -> None:
    gen.add_argument("--sequence-parallel", type=int, default=1, metavar="N", help="N processes split the video "
                     "tokens of every DiT call (Ulysses); launch with torchrun --nproc-per-node N (2N with "
                     "--cfg-parallel)")
    gen.add_argument("--cfg-parallel", action="store_true", help="the conditional and unconditional branches of "
                     "guidance on two processes (x2 processes)")
    gen.add_argument("--fsdp", action="store_true", help="shard the DiT's weights across the processes (FSDP2): "
                     "each holds 1/N of them, for models larger than one device")
    gen.add_argument("--vae-tile", type=int, default=0, metavar="T", help="decode in T x T latent-pixel tiles "
                     "(8 blended), shared among the processes of a parallel run (default 0: whole frames)")
    gen.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds a "
                     f"process waits for the others before the run stops with an error (default {DEFAULT_TIMEOUT_S})")
