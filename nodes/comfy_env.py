"""The one place where the pack meets ComfyUI (optional imports, plain fallbacks).

Inside ComfyUI: model lists and paths from `folder_paths`, the device and
memory management of `comfy.model_management`, progress bars with previews
from `comfy.utils.ProgressBar` and interrupts at every step. Outside (the
headless runner, tests): a models folder given by `UNIWORLD_MODELS_DIR`
(default ./models) with the same sub-folders, the uniworld_core device policy,
and a console progress line.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import torch

from ..uniworld_core.device import pick_device
from ..uniworld_core.errors import InputError
from ..uniworld_core.memory import release_cached_memory
from ..uniworld_core.presets import miniature

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".gguf", ".json")


def _optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def models_root() -> Path:
    """Fallback models folder (outside ComfyUI)."""
    return Path(os.environ.get("UNIWORLD_MODELS_DIR", "models"))


def models_folder() -> Path:
    """The models folder itself (where uniworld_styles.json goes)."""
    folder_paths = _optional("folder_paths")
    return Path(folder_paths.models_dir) if folder_paths is not None else models_root()


def builtin_models(kind: str) -> list[str]:
    """The built-in miniature model's files that belong in a ComfyUI model folder (if installed)."""
    if not miniature.available():
        return []
    return [name for name in miniature.COMFY_FOLDERS.get(kind, ()) if (miniature.model_dir() / name).exists()]


def model_dirs(kind: str) -> list[Path]:
    """Where models of a kind are looked up: ComfyUI's folders (or ./models/kind), then the built-in model."""
    folder_paths = _optional("folder_paths")
    roots = ([Path(p) for p in folder_paths.get_folder_paths(kind)] if folder_paths is not None
             else [models_root() / kind])
    return roots + ([miniature.model_dir()] if builtin_models(kind) else [])


def list_models(kind: str, folders: bool = False) -> list[str]:
    """Model file names (and, with `folders`, model sub-folders) of a ComfyUI model folder."""
    names: set[str] = set()
    folder_paths = _optional("folder_paths")
    if folder_paths is not None:
        names.update(n for n in folder_paths.get_filename_list(kind) if n.endswith(MODEL_SUFFIXES))
    names.update(builtin_models(kind))
    for root in model_dirs(kind):
        if not root.is_dir() or root == miniature.model_dir():
            continue
        if folder_paths is None:
            names.update(str(p.relative_to(root)) for p in root.rglob("*")
                         if p.is_file() and p.suffix in MODEL_SUFFIXES and "/" not in str(p.relative_to(root)))
        if folders:
            names.update(p.name for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())
    return sorted(names)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")


def list_tokenizer_folders(kind: str = "text_encoders") -> list[str]:
    """Sub-folders that hold tokenizer files (a model folder, or a tokenizer-only folder)."""
    names = set()
    for root in model_dirs(kind):
        if root.is_dir():
            names.update(p.name for p in root.iterdir()
                         if p.is_dir() and any((p / f).is_file() for f in TOKENIZER_FILES))
    return sorted(names)


def model_path(kind: str, name: str) -> Path:
    """Full path of a listed model, or an error naming the folder it should be in."""
    for root in model_dirs(kind):
        candidate = root / name
        if candidate.exists():
            return candidate
    folders = ", ".join(str(d) for d in model_dirs(kind))
    raise InputError(f"the model '{name}' is not in models/{kind}", f"a file or folder in {folders}",
                     "Download it into that folder (the workflow's Note lists where each file comes from).")


def compute_device() -> torch.device:
    mm = _optional("comfy.model_management")
    return mm.get_torch_device() if mm is not None else pick_device("auto")


def free_device_memory() -> int | None:
    """Free memory of the compute device in bytes (None on the CPU, where nothing is swapped)."""
    device = compute_device()
    mm = _optional("comfy.model_management")
    if device.type == "cpu":
        return None
    if mm is not None:
        return int(mm.get_free_memory(device))
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def make_room() -> None:
    """Before loading a big model: ask ComfyUI to unload its own models and free cache."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        mm.unload_all_models()
        mm.soft_empty_cache()
    else:
        release_cached_memory(compute_device())


def release_memory() -> None:
    """Free what a stopped run leaves behind (collect garbage, return cached device memory)."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    release_cached_memory(compute_device())


def check_interrupt() -> None:
    mm = _optional("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def progress_hook(total: int, preview=None):
    """A uniworld_core progress hook: ComfyUI's bar (+ preview, + interrupts) or a console line."""
    utils = _optional("comfy.utils")
    bar = utils.ProgressBar(total) if utils is not None else None

    def hook(done: int, steps: int, latents: torch.Tensor | None = None) -> None:
        check_interrupt()  # a user's cancel lands here, at every step
        if bar is not None:
            image = preview(latents) if preview is not None and latents is not None else None
            bar.update_absolute(done, steps, ("JPEG", image, 512) if image is not None else None)
        else:
            print(f"\r  step {done}/{steps}", end="\n" if done == steps else "", flush=True)

    return hook


def comfy_qwen_tokenizer_dir() -> Path | None:
    """ComfyUI's bundled Qwen2.5 tokenizer folder, when running inside ComfyUI."""
    spec = importlib.util.find_spec("comfy")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "text_encoders" / "qwen25_tokenizer"
    return folder if folder.is_dir() else None
