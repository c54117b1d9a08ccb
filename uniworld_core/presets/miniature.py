"""The built-in miniature Uniworld-OSP2.0 model (trained by `python -m training.miniature`).

A small FlashI2V DiT, a narrow Wan2.1 VAE, a tiny frozen Qwen2.5-VL with its
adapter, all trained on the procedural toy world (64x64 clips of shapes that
slide, bounce or spin; photo, watercolor, pixel art, neon and pencil sketch
renderings). It makes the main command do the real job on any machine: photo
first frame + caption + style -> stylised clip. The folder holds the weights,
`card.md` (data, sizes, steps, metrics), the toy styles and example inputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..conditioning.conditioner import Conditioner
from ..conditioning.setup import vlm_conditioner
from ..conditioning.styles import all_styles
from ..errors import UniWorldError
from ..model.attention import AttentionFn, sdpa_attention
from ..sampling.defaults import REPORT, Defaults
from ..weights.registry import load_dit, load_vae

MINIATURE_DIR = Path(__file__).resolve().parents[1] / "miniature_model"  # where the shipped model goes
DIR_VARIABLE = "UNIWORLD_MINIATURE_DIR"  # or a build of your own: python -m training.miniature --out D -> D/weights
FILES = {"dit": "toy_dit.safetensors", "vae": "toy_vae.safetensors", "adapter": "toy_adapter.safetensors",
         "vlm": "toy_vlm"}
# Which ComfyUI model folder lists which file (the node pack shows them there).
COMFY_FOLDERS = {"diffusion_models": (FILES["dit"], FILES["adapter"]), "vae": (FILES["vae"],),
                 "text_encoders": (FILES["vlm"],)}
EXAMPLES_FILE = "examples.json"  # [{"image", "prompt", "style"}]: held-out toy photos
# The full recipe's clips and sampling settings (card.json says per build).
DEFAULTS = replace(REPORT, width=64, height=64, frames=17, steps=30, shift=7.0, cfg=2.0)


@dataclass
class Miniature:
    dit: torch.nn.Module
    vae: torch.nn.Module
    conditioner: Conditioner
    folder: Path

    def styles(self):
        """The built-in styles plus the toy world's own (neon, pencil sketch, photo)."""
        return all_styles([self.folder])


def model_dir() -> Path:
    """The miniature model's folder: $UNIWORLD_MINIATURE_DIR, else the one inside the package."""
    return Path(os.environ.get(DIR_VARIABLE) or MINIATURE_DIR)


def available(folder: Path | None = None) -> bool:
    folder = folder or model_dir()
    return all((folder / name).exists() for name in FILES.values())


def _require(folder: Path) -> None:
    missing = [name for name in FILES.values() if not (folder / name).exists()]
    if missing:
        raise UniWorldError(f"the miniature model folder {folder} without {', '.join(missing)}",
                            "the files written by `python -m training.miniature --out DIR` (DIR/weights)",
                            "Rebuild it with that command, or pass --dit/--vae and a text encoder.")


def load_miniature(folder: str | Path | None = None, device: torch.device = torch.device("cpu"),
                   attention: AttentionFn = sdpa_attention,
                   encoder_device: torch.device | None = None) -> Miniature:
    """DiT, VAE and VLM conditioner of the miniature model, in float32 on `device`.

    `encoder_device` runs the VLM elsewhere (default: `device`).
    """
    folder = Path(folder or model_dir())
    _require(folder)
    dit = load_dit(folder / FILES["dit"], device, torch.float32, attention)
    vae = load_vae(folder / FILES["vae"], device, torch.float32)
    conditioner = vlm_conditioner(folder / FILES["vlm"], folder / FILES["adapter"], dtype=torch.float32,
                                  device=encoder_device or device)
    return Miniature(dit, vae, conditioner, folder)


def card(folder: str | Path | None = None) -> dict:
    """The build's card.json ({} when there is none)."""
    path = Path(folder or model_dir()) / "card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def defaults(folder: str | Path | None = None) -> Defaults:
    """This build's settings: its clip size and sampling (from card.json), else the recipe's."""
    card = Path(folder or model_dir()) / "card.json"
    if not card.is_file():
        return DEFAULTS
    content = json.loads(card.read_text())
    recipe, sampling = content.get("recipe", {}), content.get("sampling", {})
    size, frames = recipe.get("size", DEFAULTS.width), recipe.get("frames", DEFAULTS.frames)
    known = {k: sampling[k] for k in ("steps", "shift", "cfg", "fourier_ratio") if k in sampling}
    return replace(DEFAULTS, width=size, height=size, frames=frames, **known)


def examples(folder: str | Path | None = None) -> list[dict]:
    """Example inputs shipped with the model: dicts with an absolute `image` path, `prompt` and `style`."""
    folder = Path(folder or model_dir())
    path = folder / EXAMPLES_FILE
    if not path.is_file():
        return []
    return [{**entry, "image": str(folder / entry["image"])} for entry in json.loads(path.read_text())]
