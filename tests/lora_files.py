"""LoRA files in the key layouts the Wan ecosystem shares, at tiny sizes, with the merge each one means.

Each builder returns (tensors of the file, {official parameter name: dense update at strength 1}), the
update written from the file's own tensors and the layout's rules, not by the code under test. Used by
tests/test_lora.py and by bench/comfyui_lora_count.py (which counts what ComfyUI patches for the same file).
"""

from __future__ import annotations

import torch
from torch import nn

LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
           "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")
NORMS = ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k", "norm3")


def _pair(layer: nn.Linear, gen: torch.Generator, rank: int = 4):
    down = torch.randn(rank, layer.in_features, generator=gen) * 0.1
    up = torch.randn(layer.out_features, rank, generator=gen) * 0.1
    return down, up


def step_distill_lora(model: nn.Module, seed: int = 0, alpha: float = 2.0):
    """Like the lightx2v step-distillation LoRAs: low-rank pairs, bias diffs, norm and modulation diffs.

    Block 0 gets every kind; the head a pair and a bias diff; one key names an I2V-only module this
    model does not have (it must be reported, not silently dropped).
    """
    gen = torch.Generator().manual_seed(seed)
    tensors, updates = {}, {}
    for name in LINEARS:
        layer = model.get_submodule(f"blocks.0.{name}")
        down, up = _pair(layer, gen)
        key = f"diffusion_model.blocks.0.{name}"
        tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                        f"{key}.alpha": torch.tensor(alpha), f"{key}.diff_b": torch.randn(layer.out_features,
                                                                                           generator=gen) * 0.01})
        updates[f"blocks.0.{name}.weight"] = up @ down * alpha / down.shape[0]
        updates[f"blocks.0.{name}.bias"] = tensors[f"{key}.diff_b"]
    for name in NORMS:
        weight = model.get_submodule(f"blocks.0.{name}").weight
        tensors[f"diffusion_model.blocks.0.{name}.diff"] = torch.randn(weight.shape, generator=gen) * 0.01
        updates[f"blocks.0.{name}.weight"] = tensors[f"diffusion_model.blocks.0.{name}.diff"]
    tensors["diffusion_model.blocks.0.norm3.diff_b"] = torch.randn(model.blocks[0].norm3.bias.shape,
                                                                   generator=gen) * 0.01
    updates["blocks.0.norm3.bias"] = tensors["diffusion_model.blocks.0.norm3.diff_b"]
    tensors["diffusion_model.blocks.0.modulation.diff"] = torch.randn(model.blocks[0].modulation.shape,
                                                                      generator=gen) * 0.01
    updates["blocks.0.modulation"] = tensors["diffusion_model.blocks.0.modulation.diff"]
    down, up = _pair(model.head.head, gen)
    head = "diffusion_model.head.head"
    tensors.update({f"{head}.lora_down.weight": down, f"{head}.lora_up.weight": up,
                    f"{head}.diff_b": torch.randn(model.head.head.out_features, generator=gen) * 0.01})
    updates["head.head.weight"] = up @ down  # no alpha: alpha = rank
    updates["head.head.bias"] = tensors["diffusion_model.head.head.diff_b"]
    tensors["diffusion_model.img_emb.proj.1.diff_b"] = torch.zeros(4)  # I2V only: not in this model
    return tensors, updates


def wan_fun_lora(model: nn.Module, seed: int = 0, alpha: float = 4.0):
    """Wan-Fun / VideoX-Fun: kohya names with a double underscore after lora_unet."""
    gen = torch.Generator().manual_seed(seed)
    tensors, updates = {}, {}
    for block in range(len(model.blocks)):
        for name in ("cross_attn.k", "self_attn.v", "ffn.2"):
            down, up = _pair(model.get_submodule(f"blocks.{block}.{name}"), gen)
            key = "lora_unet__blocks_{}_{}".format(block, name.replace(".", "_"))
            tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                            f"{key}.alpha": torch.tensor(alpha)})
            updates[f"blocks.{block}.{name}.weight"] = up @ down * alpha / down.shape[0]
    return tensors, updates


def diffusers_lora(model: nn.Module, seed: int = 0):
    """diffusers / PEFT names: transformer.blocks.N.attn1.to_q.lora_A.weight (no alpha: scale 1)."""
    gen = torch.Generator().manual_seed(seed)
    names = {"attn1.to_q": "self_attn.q", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0"}
    tensors, updates = {}, {}
    for diffusers, official in names.items():
        down, up = _pair(model.get_submodule(f"blocks.1.{official}"), gen)
        tensors[f"transformer.blocks.1.{diffusers}.lora_A.weight"] = down
        tensors[f"transformer.blocks.1.{diffusers}.lora_B.weight"] = up
        updates[f"blocks.1.{official}.weight"] = up @ down
    return tensors, updates


BUILDERS = {"step_distill": step_distill_lora, "wan_fun": wan_fun_lora, "diffusers": diffusers_lora}


def merged(model: nn.Module, updates: dict[str, torch.Tensor], strength: float) -> dict[str, torch.Tensor]:
    """The model's state dict with every update merged in (what applying the LoRA must equal)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, delta in updates.items():
        state[name] = state[name] + strength * delta.to(state[name].dtype)
    return state
