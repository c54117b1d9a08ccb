"""Every supported file format and key layout loads back to the same model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import CFG, dit_inputs, dit_out, tiny_dit  # noqa: F401  (shared with other tests)

from uniworld_core.model.config import DiTConfig, VAEConfig
from uniworld_core.model.dit import WanDiT
from uniworld_core.model.vae import WanVAE
from uniworld_core.weights.registry import load


def assert_same_model(loaded, original) -> None:
    """Bit-identical weights; outputs equal up to CPU kernel paths (storage alignment varies)."""
    expected = original.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert torch.allclose(dit_out(loaded), dit_out(original), rtol=1e-6, atol=1e-6)


def save_sharded(state: dict, folder, shards: int = 2) -> None:
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i::shards]}
        save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


LAYOUTS = {
    "official-safetensors": lambda sd, d: save_file(sd, str(d / "m.safetensors")) or d / "m.safetensors",
    "comfyui-prefix": lambda sd, d: save_file({f"model.diffusion_model.{k}": v for k, v in sd.items()},
                                              str(d / "m.safetensors")) or d / "m.safetensors",
    "sharded-index": lambda sd, d: save_sharded(sd, d) or d / "model.safetensors.index.json",
    "sharded-folder": lambda sd, d: save_sharded(sd, d) or d,
    "pt": lambda sd, d: torch.save(sd, d / "m.pt") or d / "m.pt",
    "pt-nested-with-optimizer": lambda sd, d: torch.save(
        {"model": sd, "optimizer": {"step": torch.tensor(3)}, "epoch": 2}, d / "m.pth") or d / "m.pth",
    "official-trainer-ema-fsdp": lambda sd, d: torch.save(
        {f"_orig_mod._fsdp_wrapped_module.{k}": v for k, v in sd.items()},
        d / "ema_model_state_dict.pt") or d / "ema_model_state_dict.pt",
    "pt-legacy-format": lambda sd, d: torch.save(sd, d / "m.pth", _use_new_zipfile_serialization=False)
    or d / "m.pth",
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dit_layouts_load_identically(layout, tmp_path):
    model = tiny_dit()
    path = LAYOUTS[layout](model.state_dict(), tmp_path)
    loaded = load(path, expect="dit")
    assert loaded.kind == "flashi2v_dit" and "FlashI2V DiT" in loaded.description
    assert loaded.model.cfg == model.cfg
    assert_same_model(loaded.model, model)


def test_dit_of_a_narrower_latent_loads_with_its_patches(tmp_path):
    """A miniature's VAE may have 4 latent channels on a finer grid, read in 4x4 patches (Wan2.1: 16, 2x2)."""
    model = tiny_dit(cfg=replace(CFG, in_dim=4, out_dim=4, patch_size=(1, 4, 4)))
    save_file(model.state_dict(), str(tmp_path / "narrow.safetensors"))
    loaded = load(tmp_path / "narrow.safetensors", "dit")
    assert (loaded.model.cfg.in_dim, loaded.model.cfg.out_dim, loaded.model.cfg.patch_size) == (4, 4, (1, 4, 4))
    assert_same_model(loaded.model, model)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_files(dtype, tmp_path):
    model = tiny_dit()
    save_file({k: v.to(dtype) for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    loaded = load(tmp_path / "m.safetensors", "dit", dtype=torch.float32)
    assert str(dtype).split(".")[1] in loaded.description
    reference = WanDiT(CFG).eval()  # the same weights, rounded through the file's dtype
    reference.load_state_dict({k: v.to(dtype).float() for k, v in model.state_dict().items()})
    assert_same_model(loaded.model, reference)


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("scaled", [False, True], ids=["unscaled", "per-tensor-scale"])
def test_fp8_files_run_by_upcasting_per_layer(fp8, scaled, tmp_path):
    model = tiny_dit()
    state, dequantized = {}, {}
    for name, tensor in model.state_dict().items():
        is_linear_weight = name.endswith(".weight") and tensor.ndim == 2
        if not is_linear_weight:
            state[name] = dequantized[name] = tensor
            continue
        scale = tensor.abs().max() / torch.finfo(fp8).max if scaled else torch.tensor(1.0)
        stored = (tensor / scale).to(fp8)
        state[name] = stored
        if scaled:
            state[name.replace(".weight", ".scale_weight")] = scale.reshape(())
        dequantized[name] = stored.float() * scale  # what the fp8 file really holds
    if scaled:
        state["scaled_fp8"] = torch.zeros(0, dtype=fp8)
    save_file(state, str(tmp_path / "m.safetensors"))
    loaded = load(tmp_path / "m.safetensors", "dit")
    q = loaded.model.blocks[0].self_attn.q
    assert q.weight.dtype == fp8, "fp8 weights must stay fp8 in memory"
    reference = WanDiT(CFG).eval()
    reference.load_state_dict(dequantized)
    expected, full = dit_out(reference), dit_out(model)
    actual = dit_out(loaded.model)
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-5)
    # fp8 rounding of the weights (computed above) is the only difference from the original model
    rounding = (expected - full).abs().max()
    assert (actual - full).abs().max() <= rounding * 1.01 + 1e-6
    assert rounding > 0


def test_plain_t2v_loads_as_flashi2v_base_with_warning(tmp_path):
    cfg = DiTConfig(**{**CFG.__dict__, "flashi2v": False})
    t2v = tiny_dit(cfg=cfg)
    save_file(t2v.state_dict(), str(tmp_path / "t2v.safetensors"))
    with pytest.warns(UserWarning, match="base model for FlashI2V training"):
        loaded = load(tmp_path / "t2v.safetensors", "dit")
    assert loaded.kind == "wan_t2v_dit" and loaded.model.cfg.flashi2v
    x, t, ctx, ff = dit_inputs(cfg)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x, t, ctx, ff), t2v(x, t, ctx), rtol=1e-6, atol=1e-6)
        assert not loaded.model.learnable_proj(x[:, :, :1]).any()


def test_diffusers_dit_folder(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    theirs = diffusers.WanTransformer3DModel(num_attention_heads=1, attention_head_dim=128, text_dim=20,
                                             freq_dim=32, ffn_dim=64, num_layers=2).eval()
    theirs.save_pretrained(tmp_path / "transformer")
    with pytest.warns(UserWarning):
        loaded = load(tmp_path / "transformer", "dit")
    assert "diffusers keys" in loaded.description
    x, t, ctx, ff = dit_inputs(CFG)
    with torch.no_grad():
        expected = theirs(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        assert torch.allclose(loaded.model(x, t, ctx, ff), expected, atol=1e-5, rtol=1e-4)


def tiny_vae(seed: int = 0) -> WanVAE:
    torch.manual_seed(seed)
    return WanVAE(VAEConfig(base_dim=8)).eval()


def vae_out(vae: WanVAE) -> torch.Tensor:
    video = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    return vae.decode(vae.encode(video), clamp=False)


@pytest.mark.parametrize("fmt", ["official-pth", "comfyui-safetensors", "diffusers-folder"])
def test_vae_layouts(fmt, tmp_path):
    vae = tiny_vae()
    if fmt == "official-pth":
        path = tmp_path / "Wan2.1_VAE.pth"
        torch.save(vae.state_dict(), path)
        expected = vae_out(vae)
    elif fmt == "comfyui-safetensors":
        path = tmp_path / "wan_2.1_vae.safetensors"
        save_file(vae.state_dict(), str(path))
        expected = vae_out(vae)
    else:
        diffusers = pytest.importorskip("diffusers")
        theirs = diffusers.AutoencoderKLWan(base_dim=8, z_dim=16).eval()
        theirs.save_pretrained(tmp_path / "vae")
        path = tmp_path / "vae"
        video = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
        with torch.no_grad():
            expected_mu = theirs.encode(video).latent_dist.mean
    loaded = load(path, "vae")
    assert loaded.kind == "wan21_vae"
    if fmt == "diffusers-folder":
        video = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
        assert torch.allclose(loaded.model.encode(video, normalize=False), expected_mu, atol=1e-5)
    else:
        assert torch.allclose(vae_out(loaded.model), expected, rtol=1e-6, atol=1e-6)
