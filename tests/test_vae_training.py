"""Training the Wan VAE architecture on toy frames; retrained latent statistics travel with the file."""

from __future__ import annotations

import torch

from training.toyworld import random_clip, render_photo
from training.vae_train import (
    VAETrainConfig,
    init_for_training,
    measure_latent_stats,
    reconstruction_error,
    save_vae,
    train_vae,
    vae_loss,
)
from uniworld_core.checkpoints import load
from uniworld_core.config import VAEConfig
from uniworld_core.vae import WanVAE
from uniworld_core.vae_blocks import AttentionBlock, CausalCache, ResidualBlock


def _clips(n=8):
    return torch.stack([render_photo(random_clip(i), 5, 32).permute(3, 0, 1, 2) * 2 - 1 for i in range(n)])


def test_vae_learns_to_reconstruct_toy_clips():
    clips = _clips()
    torch.manual_seed(0)
    vae = init_for_training(WanVAE(VAEConfig(base_dim=8)))
    before = reconstruction_error(vae, clips)
    losses = train_vae(vae, clips, VAETrainConfig(steps=60, batch_size=2), log=None)
    after = reconstruction_error(vae, clips)
    assert after < 0.75 * before, f"L1 {before:.3f} -> {after:.3f}"
    assert len(losses) == 60 and all(loss == loss for loss in losses)  # no NaN


def test_gradients_reach_both_halves():
    vae = WanVAE(VAEConfig(base_dim=8))
    vae_loss(vae, _clips(2), 1e-6, torch.Generator().manual_seed(0)).backward()
    assert vae.encoder.conv1.weight.grad.abs().sum() > 0 and vae.decoder.head[2].weight.grad.abs().sum() > 0


def test_latent_statistics_are_saved_and_restored(tmp_path):
    clips = _clips(4)
    torch.manual_seed(0)
    vae = WanVAE(VAEConfig(base_dim=8)).eval()
    mean, std = measure_latent_stats(vae, clips)
    vae.set_latent_stats(mean, std)
    normalised = vae.encode(clips[:1])
    assert abs(float(normalised.mean())) < 1.5
    loaded = load(save_vae(vae, tmp_path / "toy_vae.safetensors"), "vae").model
    assert torch.allclose(loaded.latents_mean.flatten(), mean) and torch.allclose(loaded.latents_std.flatten(), std)
    assert torch.allclose(loaded.encode(clips[:1]), normalised, atol=1e-6)


def test_training_init_makes_every_block_an_identity():
    """What keeps the latent readable at the start of from-scratch training (see init_for_training)."""
    vae = init_for_training(WanVAE(VAEConfig(base_dim=8)))
    blocks = [m for m in vae.modules() if isinstance(m, (ResidualBlock, AttentionBlock))]
    assert len(blocks) > 4
    for block in blocks:
        width = block.norm.gamma.shape[0] if isinstance(block, AttentionBlock) else block.residual[0].gamma.shape[0]
        x = torch.randn(1, width, 2, 4, 4)
        expected = block.shortcut(x) if isinstance(block, ResidualBlock) else x
        assert torch.allclose(block(x, CausalCache()), expected, atol=1e-6), type(block).__name__
    convs = [m for m in vae.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert all(not c.bias.detach().any() for c in convs)
