"""LoRA files in ComfyUI's key formats: applying on the fly equals merging."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from test_loading import dit_inputs, tiny_dit

from uniworld_core.errors import CheckpointError
from uniworld_core.weights.lora import applied, merge_patches, read_lora

TARGETS = ["blocks.0.self_attn.q", "blocks.1.cross_attn.o", "blocks.1.ffn.0"]


def _lora(model, layout: str, rank=4, alpha=2.0, seed=0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in TARGETS:
        layer = model.get_submodule(name)
        down = torch.randn(rank, layer.in_features, generator=gen) * 0.1
        up = torch.randn(layer.out_features, rank, generator=gen) * 0.1
        if layout == "peft":
            out[f"diffusion_model.{name}.lora_A.weight"] = down
            out[f"diffusion_model.{name}.lora_B.weight"] = up
        elif layout == "down-up":
            out[f"diffusion_model.{name}.lora_down.weight"] = down
            out[f"diffusion_model.{name}.lora_up.weight"] = up
            out[f"diffusion_model.{name}.alpha"] = torch.tensor(alpha)
        else:  # kohya-style underscores
            key = "lora_unet_" + name.replace(".", "_")
            out[f"{key}.lora_down.weight"] = down
            out[f"{key}.lora_up.weight"] = up
            out[f"{key}.alpha"] = torch.tensor(alpha)
    return out


def _merged(model, patches):
    merged = tiny_dit()
    merged.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, items in patches.items():
            layer = merged.get_submodule(name)
            for p in items:
                layer.weight += p.delta(layer.weight.dtype, layer.weight.device)
    return merged


@pytest.mark.parametrize("layout", ["peft", "down-up", "lora_unet"])
def test_applying_equals_merging(layout, tmp_path):
    model = tiny_dit()
    save_file(_lora(model, layout), str(tmp_path / "style.safetensors"))
    patches = read_lora(tmp_path / "style.safetensors", model, strength=0.7)
    assert sorted(patches) == sorted(TARGETS)
    expected_scale = 0.7 * (2.0 if layout != "peft" else 4.0) / 4
    assert patches[TARGETS[0]][0].scale == pytest.approx(expected_scale)
    with torch.no_grad():
        base = model(*dit_inputs())
        with applied(model, patches):
            patched = model(*dit_inputs())
        after = model(*dit_inputs())
        merged = _merged(model, patches)(*dit_inputs())
    assert torch.allclose(patched, merged, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(patched, base) and torch.equal(after, base)


def test_chained_loras_add_up(tmp_path):
    model = tiny_dit()
    save_file(_lora(model, "peft", seed=1), str(tmp_path / "a.safetensors"))
    save_file(_lora(model, "down-up", seed=2), str(tmp_path / "b.safetensors"))
    both = merge_patches(read_lora(tmp_path / "a.safetensors", model, 1.0),
                         read_lora(tmp_path / "b.safetensors", model, 0.5))
    with torch.no_grad(), applied(model, both):
        patched = model(*dit_inputs())
    assert torch.allclose(patched, _merged(model, both)(*dit_inputs()), atol=1e-5, rtol=1e-5)


def test_lora_for_another_model_size(tmp_path):
    model = tiny_dit()
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 77),
               "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(128, 4)},
              str(tmp_path / "big.safetensors"))
    with pytest.raises(CheckpointError, match="trained for another model size"):
        read_lora(tmp_path / "big.safetensors", model)


def test_file_without_lora_tensors(tmp_path):
    save_file(tiny_dit().state_dict(), str(tmp_path / "dit.safetensors"))
    with pytest.raises(CheckpointError, match="no lora_A/lora_B"):
        read_lora(tmp_path / "dit.safetensors", tiny_dit())
