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
import os
from pathlib import Path

import torch

from ..uniworld_core.device import pick_device
from ..uniworld_core.errors import InputError
from ..uniworld_core.memory import release_cached_memory
from ..uniworld_core.presets import miniature

# ComfyUI's own `folder_paths.supported_pt_extensions`, for listing the same files outside ComfyUI.
PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
# The ComfyUI model folders the pack reads, each under a key of its own in `folder_paths` (sharing the
# folder's path list, as ComfyUI-GGUF does for its `.gguf` keys), with the extensions ComfyUI's key does
# not list: GGUF DiTs, sharded checkpoints' index files, and the files that mark model and tokenizer
# folders (config.json, tokenizer.json, spiece.model). ComfyUI's own keys stay as they are.
PACK_FOLDERS = {"diffusion_models": ("uniworld_diffusion_models", (".gguf", ".json")),
                "text_encoders": ("uniworld_text_encoders", (".json", ".model")),
                "vae": ("uniworld_vae", (".json",))}


def _optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def register_model_folders() -> None:
    """Give each model folder the pack reads its own key in ComfyUI's `folder_paths` (idempotent)."""
    folder_paths = _optional("folder_paths")
    if folder_paths is None:
        return
    registry = folder_paths.folder_names_and_paths
    for folder, (key, extra) in PACK_FOLDERS.items():
        if folder in registry:
            paths, extensions = registry[folder]
            registry[key] = (paths, set(extensions) | set(extra))


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


def builtin_style_folders() -> list[Path]:
    """Folders with the installed miniature model's own styles (neon, pencil sketch, photo)."""
    return [miniature.model_dir()] if miniature.available() else []


def model_dirs(kind: str) -> list[Path]:
    """Where models of a kind are looked up: ComfyUI's folders (or ./models/kind), then the built-in model."""
    folder_paths = _optional("folder_paths")
    roots = ([Path(p) for p in folder_paths.get_folder_paths(kind)] if folder_paths is not None
             else [models_root() / kind])
    return roots + ([miniature.model_dir()] if builtin_models(kind) else [])


def _scan(root: Path, extensions) -> list[str]:
    """Relative names of the files under `root` with one of `extensions`, as ComfyUI lists a folder."""
    if not root.is_dir():
        return []
    found = []
    for folder, subdirs, files in os.walk(root, followlinks=True):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files
                  if os.path.splitext(f)[1].lower() in extensions]
    return sorted(found)


def folder_entries(kind: str) -> list[tuple[Path, str]]:
    """(root, relative name) of every file listed for the pack in a model folder, built-in model included.

    Inside ComfyUI the names come from `folder_paths.get_filename_list` under the
    pack's key (so extra_model_paths.yaml folders and ComfyUI's cache apply); a
    name belongs to the first folder that has it, as in `get_full_path`.
    """
    folder_paths = _optional("folder_paths")
    key, extra = PACK_FOLDERS.get(kind, (kind, ()))
    if folder_paths is None:
        root = models_root() / kind
        entries = [(root, name) for name in _scan(root, PT_EXTENSIONS | set(extra))]
    else:
        register_model_folders()
        roots = [Path(p) for p in folder_paths.get_folder_paths(key)]
        entries = []
        for name in folder_paths.get_filename_list(key):
            root = next((r for r in roots if (r / name).is_file()), None)
            if root is not None:
                entries.append((root, name))
    home = miniature.model_dir()
    for name in builtin_models(kind):  # a built-in folder (toy_vlm) is listed by its files, like any other
        path = home / name
        names = [os.path.join(name, f) for f in _scan(path, {".json", ".safetensors"})] if path.is_dir() else [name]
        entries += [(home, n) for n in names]
    return entries


def model_path(kind: str, name: str) -> Path:
    """Full path of a listed model, or an error naming the folder it should be in."""
    for root in model_dirs(kind):
        candidate = root / name
        if _stays_inside(name) and candidate.exists():
            return candidate
    folders = ", ".join(str(d) for d in model_dirs(kind))
    raise InputError(f"the model '{name}' is not in models/{kind}", f"a file or folder in {folders}",
                     "Download it into that folder (the workflow's Note lists where each file comes from).")


def _stays_inside(name: str) -> bool:
    """Whether a model name stays inside its folder, as ComfyUI's get_full_path keeps names (a linked file
    may still live elsewhere)."""
    norm = os.path.normpath(name)
    return not os.path.isabs(norm) and norm != os.pardir and not norm.startswith(os.pardir + os.sep)


def model_problem(kind: str, name: str) -> str | bool:
    """For VALIDATE_INPUTS: True when the model is in its folder, else what is wrong and what to do."""
    try:
        model_path(kind, name)
    except InputError as exc:
        return str(exc)
    return True


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
    comfy = _optional("comfy")  # a namespace package inside ComfyUI: its __path__ is the comfy/ folder
    for base in getattr(comfy, "__path__", None) or ():
        folder = Path(base) / "text_encoders" / "qwen25_tokenizer"
        if folder.is_dir():
            return folder
    return None
