"""Tell what a weight file is from its tensor names and shapes (never its file name).

`identify(weight_file)` returns the model kind, the key layout and the map
from official names to the file's names; nothing is read but the header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .containers import WeightFile
from .keymaps import diffusers_dit_to_official, diffusers_vae_to_official, strip_prefix

DIT_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "dit.", "transformer.", "model.")
VAE_PREFIXES = ("first_stage_model.", "vae.")
ADAPTER_PREFIXES = ("encoder_adapter.", "adapter.", "text_adapter.", "model.")
LORA_MARKERS = re.compile(r"(lora_A|lora_B|lora_down|lora_up|lora\.up|lora\.down)\b|\.alpha$|\.diff(_b)?$")

KIND_NAMES = {
    "flashi2v_dit": "FlashI2V DiT", "wan_t2v_dit": "Wan2.1 T2V DiT", "wan_i2v_dit": "Wan2.1 I2V DiT",
    "wan22_dit": "Wan2.2 TI2V DiT", "wan21_vae": "Wan2.1 VAE", "wan22_vae": "Wan2.2 VAE",
    "umt5": "umT5 text encoder", "vlm_adapter": "VLM encoder adapter", "lora": "LoRA",
    "unknown": "unrecognised weights",
}


@dataclass
class Identified:
    """What a file holds: kind, key layout, and official name -> name in the file."""

    kind: str
    layout: str
    names: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype name -> tensor count
    notes: list[str] = field(default_factory=list)

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    def shapes(self, wf: WeightFile) -> dict[str, torch.Tensor]:
        """Official name -> meta tensor of the right shape (for config inference)."""
        return {o: torch.empty(wf.infos[s].shape, device="meta") for o, s in self.names.items()}


def _identity(keys) -> dict[str, str]:
    return {k: k for k in keys}


def _dit(keys: list[str]) -> tuple[str, dict[str, str]] | None:
    stripped = strip_prefix(_identity(keys), DIT_PREFIXES)
    if "condition_embedder.time_proj.weight" in stripped:
        return "diffusers", diffusers_dit_to_official(stripped)
    if "patch_embedding.weight" in stripped and "blocks.0.self_attn.q.weight" in stripped:
        return ("comfyui" if keys[0].startswith(("model.diffusion_model.", "diffusion_model."))
                else "official"), stripped
    return None


def _vae(keys: list[str]) -> tuple[str, dict[str, str]] | None:
    stripped = strip_prefix(_identity(keys), VAE_PREFIXES)
    if "encoder.conv_in.weight" in stripped and "post_quant_conv.weight" in stripped:
        resnets = {k.split(".")[4] for k in stripped if k.startswith("decoder.up_blocks.0.resnets.")}
        return "diffusers", diffusers_vae_to_official(stripped, num_res_blocks=len(resnets) - 1)
    if "encoder.conv1.weight" in stripped and "decoder.conv1.weight" in stripped:
        return "official", stripped
    return None


def _dit_kind(names: dict[str, str], wf: WeightFile) -> str:
    in_dim = wf.infos[names["patch_embedding.weight"]].shape[1]
    if in_dim == 36 or any(".k_img." in k or k.startswith("img_emb.") for k in names):
        return "wan_i2v_dit"
    if in_dim == 48:
        return "wan22_dit"
    return "flashi2v_dit" if "fourier_embedding.0.weight" in names else "wan_t2v_dit"


def identify(wf: WeightFile) -> Identified:
    """Classify a weight file by its tensor names and shapes."""
    keys = wf.keys()
    dtypes: dict[str, int] = {}
    for info in wf.infos.values():
        name = info.ggml_type or str(info.dtype).replace("torch.", "")
        if info.ggml_type in ("F32",) or (info.ggml_type and len(info.shape) == 1):
            continue  # GGUF keeps small tensors in F32 whatever the file's type
        dtypes[name] = dtypes.get(name, 0) + 1
    found = _classify(keys, wf)
    found.dtypes, found.notes = dtypes, list(wf.notes) + found.notes
    return found


def _classify(keys: list[str], wf: WeightFile) -> Identified:
    if any(LORA_MARKERS.search(k) for k in keys):
        return Identified("lora", "peft" if any("lora_A" in k for k in keys) else "kohya/comfyui")
    if (hit := _dit(keys)) is not None:
        layout, names = hit
        return Identified(_dit_kind(names, wf), layout, names)
    if (hit := _vae(keys)) is not None:
        layout, names = hit
        z_dim = wf.infos[names["conv2.weight"]].shape[0]
        return Identified("wan22_vae" if z_dim == 48 else "wan21_vae", layout, names)
    if "token_embedding.weight" in keys and "blocks.0.ffn.gate.0.weight" in keys:
        return Identified("umt5", "official", _identity(keys))
    if any(k.startswith("encoder.block.0.layer.0.SelfAttention.") for k in keys):
        return Identified("umt5", "huggingface", _identity(keys))
    adapter = strip_prefix(_identity(keys), ADAPTER_PREFIXES)
    if {"fc1.weight", "fc2.weight"} <= set(adapter) and len(adapter) <= 4:
        return Identified("vlm_adapter", "official", adapter)
    return Identified("unknown", "unknown", _identity(keys))
