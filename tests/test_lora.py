"""LoRA files in ComfyUI's key formats: applying on the fly equals merging."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from lora_files import BUILDERS, merged, step_distill_lora
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
    with pytest.raises(CheckpointError, match="no lora_A/lora_B, lora_down/lora_up or .diff"):
        read_lora(tmp_path / "dit.safetensors", tiny_dit())


# ---- the files the Wan ecosystem shares: step-distillation (with .diff/.diff_b), Wan-Fun, diffusers
#
# ComfyUI (Comfy-Org/ComfyUI a125cd8, 0.3.64) patches these same files, as measured by
# `bench/comfyui_lora_count.py` (its comfy.sd.load_lora_for_models on the tiny_dit() model):
#   step_distill: 29 patched parameters (10 Linear weights + 10 biases, 5 norm weights, the norm3 bias,
#                 the block modulation, the head weight and bias), 1 key not loaded (img_emb, I2V only)
#   wan_fun:       6 patched weights, nothing left out
#   diffusers:     0 (ComfyUI 0.3.64 leaves all 6 keys unloaded; this layout is kept here: 3 weights)
COMFYUI_PATCHES = {"step_distill": 29, "wan_fun": 6, "diffusers": 3}


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_ecosystem_loras_apply_every_patch_and_equal_merging(layout, tmp_path):
    model = tiny_dit()
    tensors, updates = BUILDERS[layout](model)
    save_file(tensors, str(tmp_path / f"{layout}.safetensors"))
    with pytest.warns(UserWarning, match="img_emb.proj.1.diff_b") if layout == "step_distill" else nullcontext():
        patches = read_lora(tmp_path / f"{layout}.safetensors", model, strength=0.8)
    assert patches.count == len(updates) == COMFYUI_PATCHES[layout]
    assert patches.skipped == (["diffusion_model.img_emb.proj.1.diff_b"] if layout == "step_distill" else [])
    reference = tiny_dit()
    reference.load_state_dict(merged(model, updates, 0.8))
    with torch.no_grad():
        base = model(*dit_inputs())
        with applied(model, patches):
            patched = model(*dit_inputs())
        expected = reference(*dit_inputs())
        assert torch.equal(model(*dit_inputs()), base), "the stored weights were changed"
    assert torch.allclose(patched, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(patched, base, atol=1e-4)


def test_diff_patches_work_under_block_swap_and_on_gguf_weights(tmp_path):
    """Norm/modulation diffs land on the weights block swap brings in; Linear diffs on quantised layers."""
    from uniworld_core import load, place_dit, quantize_file

    source = tiny_dit()
    save_file(source.state_dict(), str(tmp_path / "dit.safetensors"))
    gguf = load(quantize_file(tmp_path / "dit.safetensors", tmp_path / "dit.gguf", "Q8_0"), "dit").model
    tensors, updates = step_distill_lora(source)
    save_file(tensors, str(tmp_path / "lora.safetensors"))
    with pytest.warns(UserWarning):
        patches = read_lora(tmp_path / "lora.safetensors", gguf, strength=1.0)
    with torch.no_grad(), applied(gguf, patches):
        resident = gguf(*dit_inputs())
    place_dit(gguf, "cpu", blocks_to_swap=2, prefetch=1, latent_grid=(2, 4, 6))
    with torch.no_grad(), applied(gguf, patches):
        swapped = [gguf(*dit_inputs()) for _ in range(2)]  # two steps: the diffs must not accumulate
    assert all(torch.equal(s, resident) for s in swapped)
    # against the dense model merged with the same updates (GGUF Q8_0 rounding on the base weights only)
    dense = tiny_dit()
    dense.load_state_dict(merged(source, updates, 1.0))
    with torch.no_grad():
        expected = dense(*dit_inputs())
    assert ((resident - expected).norm() / expected.norm()).item() < 0.02


def test_a_diff_of_the_wrong_shape_is_named(tmp_path):
    save_file({"diffusion_model.blocks.0.norm3.diff": torch.zeros(7)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"blocks.0.norm3.diff' of shape \(7,\)"):
        read_lora(tmp_path / "bad.safetensors", tiny_dit())
