"""The objects our nodes pass to each other (custom types carry a UNIWORLD_ prefix)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..uniworld_core import REPORT, Conditioner, DiTPlacement, Placement, StartFrame, StyleSpec, WanDiT, WanVAE
from ..uniworld_core.sampling import LIMITS
from ..uniworld_core.weights import LoraPatch, merge_patches

DIT, VAE, TEXT_ENCODER = "UNIWORLD_DIT", "UNIWORLD_VAE", "UNIWORLD_TEXT_ENCODER"
COND, STYLE, FOURIER = "UNIWORLD_COND", "UNIWORLD_STYLE", "UNIWORLD_FOURIER"
CACHE = "UNIWORLD_CACHE"
CHUNKS_KEY = "uniworld_chunks"  # LATENT entry: latent frames of each separately decoded run
JOINS_KEY = "uniworld_joins"  # LATENT entry: [latent frame, match colours] where each continuation begins
CATEGORY = "UniWorld"


@dataclass(frozen=True)
class DiTHandle:
    """A loaded DiT plus the LoRA patches to apply while it samples (the model is shared)."""

    model: WanDiT
    description: str
    placement: DiTPlacement | None = None  # keeps the block swap (and its stats) alive
    loras: dict[str, list[LoraPatch]] = field(default_factory=dict)

    def with_lora(self, patches: dict[str, list[LoraPatch]]) -> DiTHandle:
        return replace(self, loras=merge_patches(self.loras, patches))


@dataclass(frozen=True)
class VAEHandle:
    vae: WanVAE
    description: str
    placement: Placement  # `with handle.placement.active():` around every use

    @property
    def device(self) -> torch.device:
        return self.placement.compute


@dataclass(frozen=True)
class TextEncoderHandle:
    conditioner: Conditioner
    kind: str  # "vlm" or "umt5"
    description: str


@dataclass(frozen=True)
class Condition:
    """DiT context [1, L, text_dim] and what produced it."""

    context: torch.Tensor
    prompt: str
    encoder: str


def bounds(name: str, integer: bool = False) -> dict:
    """min/max of a setting's widget: the limits the command line checks (uniworld_core.sampling.LIMITS)."""
    limit, kind = LIMITS[name], int if integer else float
    return {"min": kind(limit.low), "max": kind(limit.high)}


def spec(kind, tooltip: str, **options):
    """An input spec with its tooltip (every input of the pack has one)."""
    return (kind, {**options, "tooltip": tooltip})


def size_inputs() -> dict:
    """Width and height widgets (multiples of 16: 8x VAE, 2x2 patches)."""
    return {
        "width": spec("INT", "Width in pixels (multiple of 16).", default=REPORT.width, **bounds("width", True),
                      step=16),
        "height": spec("INT", "Height in pixels (multiple of 16).", default=REPORT.height, **bounds("height", True),
                       step=16),
    }


__all__ = ["StyleSpec", "StartFrame", "DiTHandle", "VAEHandle", "TextEncoderHandle", "Condition", "spec",
           "size_inputs"]
