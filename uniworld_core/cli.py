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

from .device import pick_device
from .errors import InputError
from .media import av_available, load_image
from .sampling.defaults import LIMITS, Limits

OUT_SUFFIXES = (".webp", ".mp4")
DEFAULT_OUT_NAME = "uniworld.webp"
DEVICE_TYPES = ("auto", "cpu", "cuda", "mps", "npu")


# What every numeric option may be: the settings' limits (shared with the nodes' widgets) and the memory ones.
RANGES = {**LIMITS, "vram_budget": Limits(1e-6, 1e6, "GiB"), "prefetch_blocks": Limits(0, 64, "blocks"),
          "blocks_to_swap": Limits(-1, 1000, "blocks (-1 = planned)"),
          # longer than one run: the first run, then continuations (memory per run stays the same)
          "frames": Limits(5, 4097, "frames, of the form 4k+1"),
          "context_frames": Limits(1, 64, "latent frames"), "new_frames": Limits(1, 64, "latent frames")}


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
    if (args.frames - 1) % 4:
        raise InputError(f"--frames {args.frames}", "a frame count of the form 4k+1 (e.g. 17, 33, 49, 81)",
                         f"Use {args.frames - (args.frames - 1) % 4} or {args.frames - (args.frames - 1) % 4 + 4}.")
    for name in ("width", "height"):
        if getattr(args, name) % 16:
            value = getattr(args, name)
            raise InputError(f"--{name} {value}", "a multiple of 16 (the VAE's 8x and the DiT's 2x2 patches)",
                             f"Use {value // 16 * 16 or 16} or {value // 16 * 16 + 16}.")


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
