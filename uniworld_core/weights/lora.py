"""LoRA: low-rank updates applied on the fly, never merged into the stored weights.

    patches = read_lora("style.safetensors", model, strength=0.8)
    with applied(model, patches):
        video = sample(...)

A patched linear computes `W x + scale * B (A x)` with scale = strength *
alpha / rank, which equals merging `W + scale * B A` (tested) while the base
model stays untouched: a loader can be cached and shared, LoRAs chain, and
quantised weights (fp8, GGUF) keep their storage. Key formats: the ones
ComfyUI's own loader reads — `diffusion_model.<module>.lora_A/lora_B`
(PEFT), `.lora_down/.lora_up` with `.alpha`, `lora_unet_<module_with_underscores>`
— with official or diffusers module names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CheckpointError
from .containers import open_weights
from .keymaps import DIFFUSERS_DIT_RULES, rename

PAIR = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(\.default)?\.weight$")
PREFIXES = ("diffusion_model.", "model.diffusion_model.", "base_model.model.", "transformer.", "unet.")


@dataclass
class LoraPatch:
    down: torch.Tensor  # A: [rank, in]
    up: torch.Tensor  # B: [out, rank]
    scale: float

    def delta(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The dense update scale * B @ A (for merging and tests)."""
        up, down = self.up.to(device, torch.float32), self.down.to(device, torch.float32)
        return (up @ down * self.scale).to(dtype)


def _module_name(raw: str, linears: dict[str, nn.Module], underscored: dict[str, str]) -> str | None:
    for prefix in PREFIXES:
        if raw.startswith(prefix):
            raw = raw[len(prefix):]
            break
    if raw.startswith("lora_unet_"):
        return underscored.get(raw[len("lora_unet_"):])
    if raw in linears:
        return raw
    official = rename(raw + ".weight", DIFFUSERS_DIT_RULES).removesuffix(".weight")
    return official if official in linears else None


def read_lora(path, model: nn.Module, strength: float = 1.0) -> dict[str, list[LoraPatch]]:
    """The patches a LoRA file makes to `model`'s linear layers (module name -> patches)."""
    wf = open_weights(path)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    underscored = {n.replace(".", "_"): n for n in linears}
    pairs: dict[str, dict[str, str]] = {}
    for key in wf.keys():
        if match := PAIR.match(key):
            pairs.setdefault(match["module"], {})[match["kind"]] = key
    if not pairs:
        raise CheckpointError(f"'{wf.path.name}' has no lora_A/lora_B or lora_down/lora_up tensors",
                              "a LoRA file")
    patches: dict[str, list[LoraPatch]] = {}
    unmatched = []
    for raw, keys in pairs.items():
        name = _module_name(raw, linears, underscored)
        down_key, up_key = keys.get("lora_A", keys.get("lora_down")), keys.get("lora_B", keys.get("lora_up"))
        if name is None or down_key is None or up_key is None:
            unmatched.append(raw)
            continue
        down, up = wf.get(down_key).float(), wf.get(up_key).float()
        layer = linears[name]
        if down.shape[1] != layer.in_features or up.shape[0] != layer.out_features:
            raise CheckpointError(f"a LoRA for '{name}' of shape {tuple(up.shape)}x{tuple(down.shape)}",
                                  f"{layer.out_features}x{layer.in_features} for this model",
                                  "The LoRA was trained for another model size.")
        rank = down.shape[0]
        alpha_key = next((k for k in (f"{raw}.alpha", f"{raw}.lora_A.alpha") if k in wf.infos), None)
        alpha = float(wf.get(alpha_key)) if alpha_key else float(rank)
        patches.setdefault(name, []).append(LoraPatch(down, up, strength * alpha / rank))
    if not patches:
        raise CheckpointError(f"none of the {len(pairs)} LoRA modules of '{wf.path.name}' exist in this "
                              f"model (e.g. {unmatched[:2]})", "a LoRA for a Wan2.1 / FlashI2V DiT")
    return patches


def merge_patches(*sets: dict[str, list[LoraPatch]]) -> dict[str, list[LoraPatch]]:
    """Several LoRAs (a chain of loaders) as one patch set."""
    merged: dict[str, list[LoraPatch]] = {}
    for patches in sets:
        for name, items in patches.items():
            merged.setdefault(name, []).extend(items)
    return merged


@contextmanager
def applied(model: nn.Module, patches: dict[str, list[LoraPatch]]) -> Iterator[nn.Module]:
    """The model with the patches active inside the block (forward hooks; weights untouched)."""
    handles = []

    def hook_for(items: list[LoraPatch]):
        def hook(module, inputs, output):
            x = inputs[0]
            extra = 0
            for p in items:
                extra = extra + (x.to(p.down.dtype) @ p.down.to(x.device).T) @ p.up.to(x.device).T * p.scale
            return output + extra.to(output.dtype)
        return hook

    try:
        for name, items in patches.items():
            handles.append(model.get_submodule(name).register_forward_hook(hook_for(items)))
        yield model
    finally:
        for handle in handles:
            handle.remove()
