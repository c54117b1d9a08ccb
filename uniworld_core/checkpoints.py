"""Reading weight files into official-layout state dicts and ready models.

Safetensors are read lazily; `.pt/.pth` only through
`torch.load(weights_only=True)`, so no file can run code. Models are built on
the meta device and take the file's tensors directly (`assign=True`), so a
checkpoint is never held twice in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .attention import AttentionFn, sdpa_attention
from .config import infer_dit_config, infer_vae_config
from .device import cast_model
from .dit import WanDiT
from .errors import CheckpointError
from .keymaps import diffusers_dit_to_official, diffusers_vae_to_official, strip_prefix
from .vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, WanVAE, _stat

DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
VAE_PREFIXES = ("first_stage_model.", "vae.")
_NESTED_KEYS = ("state_dict", "model", "module", "ema")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .pt/.pth file (unwrapping {'state_dict': ...} nesting)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no file at '{path}'", "an existing weight file",
                              "Check the path or the ComfyUI models folder.")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # weights_only refuses pickled code with an UnpicklingError
            raise CheckpointError(f"'{path.name}' is not a plain tensor file ({exc})",
                                  "a state dict saved with torch.save",
                                  "Convert it to safetensors with trusted tools first.") from exc
    else:
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"'{path.name}' is not a readable safetensors file ({exc})",
                                  "a complete .safetensors file",
                                  "Re-download or re-export the file.") from exc
    while isinstance(state, Mapping) and len(state) == 1 and next(iter(state)) in _NESTED_KEYS:
        state = next(iter(state.values()))
    for key in _NESTED_KEYS:  # e.g. {'model': {...}, 'optimizer': {...}}
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'{path.name}' holds no flat tensor dictionary",
                              "a state dict of tensors")
    return dict(state)


def official_dit_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ComfyUI-prefixed or diffusers DiT keys to the official layout."""
    state = strip_prefix(state, DIT_PREFIXES)
    if "condition_embedder.time_proj.weight" in state:
        state = diffusers_dit_to_official(state)
    return state


def official_vae_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename diffusers VAE keys to the official layout."""
    state = strip_prefix(state, VAE_PREFIXES)
    if "encoder.conv_in.weight" in state:
        per_stage = {k.split(".")[4] for k in state if k.startswith("decoder.up_blocks.0.resnets.")}
        state = diffusers_vae_to_official(state, num_res_blocks=len(per_stage) - 1)
    return state


def _load_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"the {what} weights do not fit: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}", f"a complete {what} state dict",
            "Check that the file is the right model and not truncated.")


def build_dit(state: Mapping[str, torch.Tensor], device: torch.device, dtype: torch.dtype,
              attention: AttentionFn = sdpa_attention, num_heads: int | None = None) -> WanDiT:
    """A WanDiT built from an official-layout state dict (config inferred from shapes)."""
    cfg = infer_dit_config(state, num_heads=num_heads)
    with torch.device("meta"):
        model = WanDiT(cfg, attention)
    _load_strict(model, state, "DiT")
    return cast_model(model.eval(), dtype, device)


def build_vae(state: Mapping[str, torch.Tensor], device: torch.device,
              dtype: torch.dtype) -> WanVAE:
    """A WanVAE built from an official-layout state dict, with Wan2.1's latent statistics."""
    cfg = infer_vae_config(state)
    with torch.device("meta"):
        model = WanVAE(cfg)
    _load_strict(model, state, "VAE")
    model.register_buffer("latents_mean", _stat(WAN21_LATENTS_MEAN), persistent=False)
    model.register_buffer("latents_std", _stat(WAN21_LATENTS_STD), persistent=False)
    return cast_model(model.eval(), dtype, device)


def load_dit(path: str | Path, device: torch.device, dtype: torch.dtype,
             attention: AttentionFn = sdpa_attention) -> WanDiT:
    """Load a DiT file (official, ComfyUI-prefixed or diffusers keys)."""
    return build_dit(official_dit_state(read_state_dict(path)), device, dtype, attention)


def load_vae(path: str | Path, device: torch.device, dtype: torch.dtype) -> WanVAE:
    """Load a Wan2.1 VAE file (official or diffusers keys)."""
    return build_vae(official_vae_state(read_state_dict(path)), device, dtype)
