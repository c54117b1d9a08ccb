"""LoRA: low-rank and full-difference updates applied on the fly, never merged into the stored weights.

    patches = read_lora("style.safetensors", model, strength=0.8)
    with applied(model, patches):
        video = sample(...)

A file may hold, per module, a low-rank pair (`lora_A/lora_B` as PEFT writes
it, `lora_down/lora_up` with `.alpha`), a full weight difference (`.diff`)
and a bias difference (`.diff_b`), as step-distillation LoRAs carry for
norms, biases and modulations. Module names may be official
(`diffusion_model.blocks.0.self_attn.q`), underscored (`lora_unet_blocks_0_...`,
Wan-Fun's `lora_unet__blocks_0_...`) or diffusers (`transformer.blocks.0.attn1.to_q`).

Linear and convolution updates are added to the layer's output by a forward
hook, `W x + s * B (A x) + s * D x + s * d_b`, which equals merging (tested)
and keeps quantised storage (fp8, GGUF) as it is. Other parameters (norm
weights, modulations) are swapped for `p + s * D` while their module runs,
after block swap has brought them in. Keys that cannot be applied are named
in a warning and in `patches.skipped`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from .containers import naming_the_file, open_weights
from .keymaps import DIFFUSERS_DIT_RULES, rename

PAIR = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(\.default)?\.weight$")
DIFF = re.compile(r"^(?P<module>.+?)\.(?P<kind>diff|diff_b)$")
PREFIXES = ("diffusion_model.", "model.diffusion_model.", "base_model.model.", "transformer.", "unet.")


@dataclass
class LoraPatch:
    """A low-rank update of a Linear's weight: scale * up @ down."""

    down: torch.Tensor  # A: [rank, in]
    up: torch.Tensor  # B: [out, rank]
    scale: float

    def delta(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The dense update scale * B @ A (for merging and tests)."""
        up, down = self.up.to(device, torch.float32), self.down.to(device, torch.float32)
        return (up @ down * self.scale).to(dtype)


@dataclass
class DiffPatch:
    """A full difference added to one parameter of a module: `param + scale * diff`."""

    param: str  # "weight", "bias" or the parameter's own name (e.g. "modulation")
    diff: torch.Tensor
    scale: float


Patch = LoraPatch | DiffPatch


class LoraPatches(dict):
    """Module name -> patches, plus the file's keys that were not applied (`skipped`)."""

    skipped: list[str]

    def __init__(self, *args, skipped: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped = list(skipped or [])

    @property
    def count(self) -> int:
        """Patched parameters (a low-rank pair and a `.diff` of the same weight count once, as in ComfyUI)."""
        return len({(name, "weight" if isinstance(p, LoraPatch) else p.param)
                    for name, items in self.items() for p in items})


def _strip(raw: str) -> str:
    raw = raw.replace("lora_unet__", "lora_unet_", 1)  # Wan-Fun writes a double underscore
    for prefix in PREFIXES:
        if raw.startswith(prefix):
            return raw[len(prefix):]
    return raw


def _target(raw: str, names: dict[str, nn.Module], underscored: dict[str, str]) -> tuple[str, str] | None:
    """(module name, parameter or '') that a key's module part refers to, in official names."""
    raw = _strip(raw)
    if raw.startswith("lora_unet_"):
        raw = underscored.get(raw[len("lora_unet_"):], "")
    if raw in names:
        return raw, ""
    official = rename(raw + ".weight", DIFFUSERS_DIT_RULES).removesuffix(".weight")
    if official in names:
        return official, ""
    owner, _, param = raw.rpartition(".")  # a bare parameter such as blocks.0.modulation
    if owner in names and param in dict(names[owner].named_parameters(recurse=False)):
        return owner, param
    return None


def _low_rank(wf, name: str, layer: nn.Module, keys: dict[str, str], strength: float) -> LoraPatch:
    down, up = wf.get(keys.get("lora_A", keys.get("lora_down"))).float(), wf.get(
        keys.get("lora_B", keys.get("lora_up"))).float()
    if not isinstance(layer, nn.Linear) or down.shape[1] != layer.in_features or up.shape[0] != layer.out_features:
        expected = f"{layer.out_features}x{layer.in_features}" if isinstance(layer, nn.Linear) else "a Linear"
        raise CheckpointError(f"a LoRA for '{name}' of shape {tuple(up.shape)}x{tuple(down.shape)}",
                              f"{expected} for this model", "The LoRA was trained for another model size.")
    rank = down.shape[0]
    alpha_key = next((k for k in (keys["raw"] + ".alpha", keys["raw"] + ".lora_A.alpha") if k in wf.infos), None)
    alpha = float(wf.get(alpha_key)) if alpha_key else float(rank)
    return LoraPatch(down, up, strength * alpha / rank)


def _diff(wf, name: str, module: nn.Module, key: str, param: str, strength: float) -> DiffPatch:
    target = dict(module.named_parameters(recurse=False)).get(param)
    diff = wf.get(key).float()
    shape = _logical_shape(module, param, target)
    if shape is None or tuple(diff.shape) != shape:
        raise CheckpointError(f"a difference '{key}' of shape {tuple(diff.shape)}",
                              f"the shape {shape} of {name}.{param} in this model",
                              "The LoRA was made for another model.")
    return DiffPatch(param, diff, strength)


def _logical_shape(module: nn.Module, param: str, target) -> tuple[int, ...] | None:
    if param == "weight" and isinstance(module, nn.Linear):  # fp8/GGUF storage: the dense shape
        return (module.out_features, module.in_features)
    if param == "weight" and isinstance(module, nn.Conv3d):
        return (module.out_channels, module.in_channels // module.groups, *module.kernel_size)
    return None if target is None else tuple(target.shape)


def _group(keys: list[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Keys by the module part they patch (raw names); and the keys that belong to no patch."""
    groups: dict[str, dict[str, str]] = {}
    others = []
    for key in keys:
        match = PAIR.match(key) or DIFF.match(key)
        if match:
            groups.setdefault(match["module"], {"raw": match["module"]})[match["kind"]] = key
        elif not key.endswith(".alpha"):
            others.append(key)
    return groups, others


def read_lora(path, model: nn.Module, strength: float = 1.0) -> LoraPatches:
    """The patches a LoRA file makes to `model` (module name -> patches); unapplied keys are warned about."""
    with naming_the_file(path):
        return _read_lora(path, model, strength)


def _read_lora(path, model: nn.Module, strength: float) -> LoraPatches:
    wf = open_weights(path)
    names = dict(model.named_modules())
    underscored = {n.replace(".", "_"): n for n in names if n}
    groups, skipped = _group(wf.keys())
    if not groups:
        raise CheckpointError(f"'{wf.path.name}' has no lora_A/lora_B, lora_down/lora_up or .diff tensors",
                              "a LoRA file")
    patches = LoraPatches()
    for raw, keys in groups.items():
        found = _target(raw, names, underscored)
        if found is None:
            skipped += [k for kind, k in keys.items() if kind != "raw"]
            continue
        name, param = found
        module = names[name]
        if "lora_A" in keys or "lora_down" in keys:
            if ("lora_B" in keys or "lora_up" in keys) and not param:
                patches.setdefault(name, []).append(_low_rank(wf, name, module, keys, strength))
            else:
                skipped += [keys.get(k) for k in ("lora_A", "lora_down", "lora_B", "lora_up") if k in keys]
        if "diff" in keys:
            patches.setdefault(name, []).append(_diff(wf, name, module, keys["diff"], param or "weight", strength))
        if "diff_b" in keys:
            patches.setdefault(name, []).append(_diff(wf, name, module, keys["diff_b"], "bias", strength))
    patches.skipped = sorted(skipped)
    if not patches:
        raise CheckpointError(f"none of the {len(groups)} modules of '{wf.path.name}' exist in this model "
                              f"(e.g. {sorted(groups)[:2]})", "a LoRA for a Wan2.1 / FlashI2V DiT")
    if patches.skipped:
        warnings.warn(f"LoRA '{wf.path.name}': {len(patches.skipped)} keys not applied: "
                      f"{', '.join(patches.skipped[:8])}{' ...' if len(patches.skipped) > 8 else ''}", stacklevel=2)
    return patches


def merge_patches(*sets: dict[str, list[Patch]]) -> LoraPatches:
    """Several LoRAs (a chain of loaders) as one patch set."""
    merged = LoraPatches(skipped=[k for patches in sets for k in getattr(patches, "skipped", [])])
    for patches in sets:
        for name, items in patches.items():
            merged.setdefault(name, []).extend(items)
    return merged


def _output_update(module: nn.Module, x: torch.Tensor, items: list[Patch]) -> torch.Tensor | int:
    """What the patches add to a Linear's / Conv3d's output for input x (in float32)."""
    x = x.float()
    weight, bias, extra = None, None, 0
    for p in items:
        if isinstance(p, LoraPatch):
            extra = extra + (x @ p.down.to(x.device).T) @ p.up.to(x.device).T * p.scale
        elif p.param == "weight":
            weight = p.diff.to(x.device) * p.scale + (0 if weight is None else weight)
        else:
            bias = p.diff.to(x.device) * p.scale + (0 if bias is None else bias)
    if weight is None and bias is None:
        return extra
    if weight is None:
        weight = torch.zeros(_logical_shape(module, "weight", None), device=x.device)
    if isinstance(module, nn.Conv3d):
        return extra + F.conv3d(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)
    return extra + F.linear(x, weight, bias)


def _output_hook(items: list[Patch]):
    def hook(module, inputs, output):
        return output + _output_update(module, inputs[0], items).to(output.dtype)
    return hook


def _parameter_hooks(module: nn.Module, items: list[DiffPatch]):
    """Swap `p` for `p + s * D` while the module runs (after block swap has loaded `p`), then put `p` back."""
    originals: dict[str, torch.Tensor] = {}

    def before(mod, args):
        for p in items:
            param = getattr(mod, p.param)
            originals[p.param] = param.data
            param.data = param.data + (p.diff * p.scale).to(param.device, param.dtype)

    def after(mod, args, output):
        for name, data in originals.items():
            getattr(mod, name).data = data
        originals.clear()

    return module.register_forward_pre_hook(before), module.register_forward_hook(after, prepend=True)


@contextmanager
def applied(model: nn.Module, patches: dict[str, list[Patch]]) -> Iterator[nn.Module]:
    """The model with the patches active inside the block (hooks; stored weights untouched)."""
    handles = []
    try:
        for name, items in patches.items():
            module = model.get_submodule(name)
            layer = isinstance(module, (nn.Linear, nn.Conv3d))
            by_output = [isinstance(p, LoraPatch) or (layer and p.param in ("weight", "bias")) for p in items]
            on_output = [p for p, out in zip(items, by_output) if out]
            on_params = [p for p, out in zip(items, by_output) if not out]
            if on_output:
                handles.append(module.register_forward_hook(_output_hook(on_output)))
            if on_params:
                handles.extend(_parameter_hooks(module, on_params))
        yield model
    finally:
        for handle in handles:
            handle.remove()
