"""Unit tests of the pieces: RoPE, config inference, dtype policy, FlashI2V init, attention."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import relative_error

from uniworld_core.device import cast_model, keeps_fp32
from uniworld_core.model.attention import available_backends, chunked_attention, get_attention, sdpa_attention
from uniworld_core.model.config import (
    DIT_PRESETS,
    VAE_PRESETS,
    DiTConfig,
    VAEConfig,
    infer_dit_config,
    infer_vae_config,
)
from uniworld_core.model.dit import WanDiT
from uniworld_core.model.rope import apply_rope, rope_tables
from uniworld_core.model.vae import WanVAE
from uniworld_core.sampling.schedule import DYNAMIC_SHIFT_LOG, DYNAMIC_SHIFT_SEQ, dynamic_shift, shift_sigmas


def _complex_rope(x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Independent formulation: complex multiplication by e^{i*pos*theta^(-2j/d_part)}."""
    f, h, w = grid
    d = x.shape[-1]
    parts = [d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)]
    positions = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w),
                                           indexing="ij"), -1).reshape(-1, 3).double()
    angles = []
    for axis, part in enumerate(parts):
        inv = 10000.0 ** (-torch.arange(0, part, 2).double() / part)
        angles.append(positions[:, axis:axis + 1] * inv)
    rot = torch.polar(torch.ones(1, dtype=torch.float64), torch.cat(angles, -1))  # [L, d/2]
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * rot[None, :, None]).flatten(-2).float()


@pytest.mark.parametrize("head_dim,grid", [(16, (3, 4, 6)), (128, (2, 5, 3)), (24, (1, 2, 9))])
def test_rope_matches_complex_formulation(head_dim, grid):
    x = torch.randn(2, math.prod(grid), 3, head_dim)
    cos, sin = rope_tables(grid, head_dim, x.device)
    assert relative_error(apply_rope(x, cos, sin), _complex_rope(x, grid)) < 1e-6


@pytest.mark.parametrize("name", ["tiny", "1.3B", "14B"])
def test_dit_config_inferred_from_shapes(name):
    with torch.device("meta"):
        model = WanDiT(DIT_PRESETS[name])
    assert infer_dit_config(model.state_dict()) == DIT_PRESETS[name]


def test_dit_config_variants_inferred():
    cfg = DiTConfig(dim=48, ffn_dim=64, num_heads=3, num_layers=2, text_dim=20, proj_kernel_t=3)
    with torch.device("meta"):
        state = WanDiT(cfg).state_dict()
    assert infer_dit_config(state, num_heads=3, text_len=512) == cfg
    t2v = {k: v for k, v in state.items() if not k.startswith(("fourier_embedding", "learnable_proj"))}
    assert infer_dit_config(t2v, num_heads=3).flashi2v is False


@pytest.mark.parametrize("cfg", [
    VAE_PRESETS["wan2.1"], VAE_PRESETS["tiny"],
    VAEConfig(base_dim=8, num_res_blocks=1, temporal_downsample=(True, True, False)),
])
def test_vae_config_inferred_from_shapes(cfg):
    with torch.device("meta"):
        model = WanVAE(cfg)
    assert infer_vae_config(model.state_dict()) == cfg


def test_wan21_vae_has_about_127m_parameters():
    with torch.device("meta"):
        model = WanVAE(VAE_PRESETS["wan2.1"])
    assert 120e6 < sum(p.numel() for p in model.parameters()) < 135e6


def test_cast_keeps_precision_critical_weights_fp32():
    model = cast_model(WanDiT(DIT_PRESETS["tiny"]), torch.bfloat16)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["blocks.0.modulation"] == torch.float32
    assert dtypes["blocks.0.norm3.weight"] == torch.float32
    assert dtypes["blocks.0.self_attn.norm_q.weight"] == torch.float32
    assert dtypes["time_projection.1.weight"] == torch.float32
    assert dtypes["head.modulation"] == torch.float32
    assert dtypes["blocks.0.self_attn.q.weight"] == torch.bfloat16
    assert dtypes["blocks.1.ffn.0.weight"] == torch.bfloat16
    assert not keeps_fp32("blocks.0.cross_attn.k.weight")


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 4e-2), (torch.float16, 5e-3)])
def test_low_precision_forward_stays_close(dtype, tol):
    torch.manual_seed(0)
    full = WanDiT(DIT_PRESETS["tiny"]).eval()
    low = cast_model(WanDiT(DIT_PRESETS["tiny"]).eval(), dtype)
    low.load_state_dict(full.state_dict())
    low = cast_model(low, dtype)
    x, ctx = torch.randn(1, 16, 2, 8, 8), torch.randn(1, 5, 32)
    ff, t = torch.randn_like(x), torch.tensor([700.0])
    with torch.no_grad():
        err = relative_error(low(x, t, ctx, ff), full(x, t, ctx, ff))
    assert 0 < err < tol


def test_fresh_flashi2v_modules_leave_the_t2v_model_unchanged():
    """Zero-initialised outputs: a FlashI2V model made from T2V weights is that T2V model."""
    torch.manual_seed(0)
    cfg = DIT_PRESETS["tiny"]
    t2v = WanDiT(DiTConfig(**{**cfg.__dict__, "flashi2v": False})).eval()
    i2v = WanDiT(cfg).eval()
    missing = i2v.load_state_dict(t2v.state_dict(), strict=False).missing_keys
    assert all(k.startswith(("fourier_embedding", "learnable_proj")) for k in missing)
    x, ctx, t = torch.randn(1, 16, 2, 4, 4), torch.randn(1, 3, cfg.text_dim), torch.tensor([10.0])
    with torch.no_grad():
        assert torch.equal(i2v.learnable_proj(x[:, :, :1]), torch.zeros_like(x[:, :, :1]))
        assert torch.equal(i2v(x, t, ctx, torch.randn_like(x)), t2v(x, t, ctx))


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = WanDiT(DIT_PRESETS["tiny"])
    x, ctx, t = torch.randn(1, 16, 1, 4, 4), torch.randn(1, 3, 32), torch.tensor([300.0])
    ff = torch.randn_like(x)
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = flag
        model(x, t, ctx, ff).square().mean().backward()
        grads.append(model.blocks[0].self_attn.q.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_shift_and_dynamic_shift():
    sigmas = torch.linspace(1, 0, 11)
    assert torch.equal(shift_sigmas(sigmas, 1.0), sigmas)
    shifted = shift_sigmas(sigmas, 7.0)
    assert shifted[0] == 1 and shifted[-1] == 0 and (shifted >= sigmas).all()
    (s0, s1), (l0, l1) = DYNAMIC_SHIFT_SEQ, DYNAMIC_SHIFT_LOG
    for tokens, log_shift in ((s0, l0), (s1, l1)):
        side = round(2 * math.sqrt(tokens))  # an HxW latent has H*W/4 tokens per frame
        assert dynamic_shift(side, side) == pytest.approx(math.exp(log_shift))


def test_attention_registry(monkeypatch):
    from uniworld_core.model import attention

    assert {"sdpa", "chunked"} <= set(available_backends())
    assert get_attention("sdpa") is sdpa_attention and get_attention("chunked") is chunked_attention
    messages = []
    monkeypatch.setattr(attention, "bf16_matmul_beats_cpu_sdpa", lambda: False)  # an AMX Xeon, say
    assert get_attention("auto", torch.device("cpu"), log=messages.append) is sdpa_attention
    assert messages == ["attention: sdpa (auto on cpu; --attention / the loader's input overrides)"]
    monkeypatch.setattr(attention, "bf16_matmul_beats_cpu_sdpa", lambda: True)  # AVX512-BF16 without AMX
    assert get_attention("auto", torch.device("cpu"), log=messages.append) is attention.cpu_bf16_scores_attention
    assert "bf16 scores for bf16" in messages[-1]
    with pytest.raises(ValueError, match="unknown attention backend"):
        get_attention("magic")
    for name in ("flash_attn", "sage", "npu"):
        if name not in available_backends():
            with pytest.raises(ValueError, match="not installed"):
                get_attention(name)


def test_tiled_decode_blends_exactly():
    """With a local stand-in decoder the tiled result must equal the untiled one everywhere."""
    from uniworld_core.model.config import VAEConfig
    from uniworld_core.model.vae import WanVAE

    vae = WanVAE(VAEConfig(base_dim=8)).eval()

    def local_decode(latents, normalized=True, clamp=True, progress=None):
        frames = latents[:, :3].repeat_interleave(4, dim=2)[:, :, 3:]  # 1 + 4(t-1) frames
        return frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)

    vae.decode = local_decode
    latents = torch.randn(1, 16, 2, 21, 30)
    tiled = vae.decode_tiled(latents, tile=8, overlap=3, clamp=False)
    assert tiled.shape == (1, 3, 5, 168, 240)
    assert torch.allclose(tiled, local_decode(latents), atol=1e-6)


def test_tiled_decode_with_a_large_tile_is_the_plain_decode():
    from uniworld_core.model.config import VAEConfig
    from uniworld_core.model.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(VAEConfig(base_dim=8)).eval()
    latents = torch.randn(1, 16, 2, 4, 6)
    assert torch.equal(vae.decode_tiled(latents, tile=8, overlap=2), vae.decode(latents))
