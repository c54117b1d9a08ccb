"""Training the Wan VAE architecture on toy frames; retrained latent statistics travel with the file."""

from __future__ import annotations

import pytest
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
from uniworld_core.model.config import VAEConfig
from uniworld_core.model.vae import WanVAE
from uniworld_core.model.vae_blocks import AttentionBlock, CausalCache, ResidualBlock
from uniworld_core.weights.registry import load


def _clips(n=8):
    return torch.stack([render_photo(random_clip(i), 5, 32).permute(3, 0, 1, 2) * 2 - 1 for i in range(n)])


def _decoded(vae, latents):
    """The decoder's clip for raw (unnormalised) latents, chunk by chunk as vae_loss decodes it."""
    return torch.cat(list(vae.reconstruct_chunks(latents, normalized=False)), dim=2)


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


def test_latent_noise_decodes_the_mean_plus_that_much_noise():
    """latent_noise: the decoder reads mu + latent_noise * N(0, 1), drawn from the training generator."""
    torch.manual_seed(1)
    vae = WanVAE(VAEConfig(base_dim=8))
    clips = _clips(2)
    with torch.no_grad():
        mu, _ = vae.moments(clips)
        noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
        for amount in (0.0, 0.5):
            expected = (_decoded(vae, mu + amount * noise) - clips).square().mean()
            got = vae_loss(vae, clips, 0.0, torch.Generator().manual_seed(3), sample_posterior=False,
                           latent_noise=amount)
            assert torch.allclose(got, expected, rtol=1e-5), amount
        assert not torch.allclose(vae_loss(vae, clips, 0.0, torch.Generator().manual_seed(3), False, "mse", 0.5),
                                  vae_loss(vae, clips, 0.0, torch.Generator().manual_seed(3), False, "mse", 0.0))


def test_loss_weights_make_a_weighted_mean_of_the_pixel_errors():
    """weight: each pixel's error counts in proportion; a 0/1 weight is the plain error over its 1s."""
    torch.manual_seed(2)
    vae = WanVAE(VAEConfig(base_dim=8))
    clips = _clips(2)
    with torch.no_grad():
        mu, _ = vae.moments(clips)
        error = (_decoded(vae, mu) - clips).square()
        inside = torch.zeros(2, 1, *clips.shape[2:])
        inside[..., 4:20, 8:24] = 1
        plain = vae_loss(vae, clips, 0.0, torch.Generator(), sample_posterior=False)
        ones = vae_loss(vae, clips, 0.0, torch.Generator(), sample_posterior=False, weight=torch.ones_like(inside))
        masked = vae_loss(vae, clips, 0.0, torch.Generator(), sample_posterior=False, weight=inside)
        heavy = vae_loss(vae, clips, 0.0, torch.Generator(), sample_posterior=False, weight=1 + 4 * inside)
    assert torch.allclose(ones, plain, rtol=1e-6)
    assert torch.allclose(masked, error[(inside > 0).expand_as(error)].mean(), rtol=1e-5)
    weights = (1 + 4 * inside).expand_as(error)
    assert torch.allclose(heavy, (error * weights).sum() / weights.sum(), rtol=1e-5)


def test_training_with_loss_weights_draws_the_same_batches_and_refuses_a_misfit():
    clips = _clips(4)
    cfg = VAETrainConfig(steps=3, image_steps=2, image_batch=2, batch_size=2, crop=16)
    runs = []
    for weights in (None, torch.ones(4, 1, *clips.shape[2:])):
        torch.manual_seed(0)
        vae = init_for_training(WanVAE(VAEConfig(base_dim=8)))
        runs.append(train_vae(vae, clips, cfg, log=None, weights=weights))
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)  # weights of 1: the same crops of the same clips
    with pytest.raises(ValueError, match="do not fit clips"):
        train_vae(WanVAE(VAEConfig(base_dim=8)), clips, cfg, log=None, weights=torch.ones(4, 1, 5, 16, 16))


@pytest.mark.parametrize("z_dim", [16, 32])  # 32: Wan2.1's 16 constants do not apply, a fresh VAE starts at 0/1
def test_latent_statistics_are_saved_and_restored(tmp_path, z_dim):
    clips = _clips(4)
    torch.manual_seed(0)
    vae = WanVAE(VAEConfig(base_dim=8, z_dim=z_dim)).eval()
    mean, std = measure_latent_stats(vae, clips)
    vae.set_latent_stats(mean, std)
    normalised = vae.encode(clips[:1])
    assert abs(float(normalised.mean())) < 1.5
    loaded = load(save_vae(vae, tmp_path / "toy_vae.safetensors"), "vae").model
    assert torch.allclose(loaded.latents_mean.flatten(), mean) and torch.allclose(loaded.latents_std.flatten(), std)
    assert torch.allclose(loaded.encode(clips[:1]), normalised, atol=1e-6)


def test_a_vae_of_another_latent_width_needs_its_statistics(tmp_path):
    """Wan2.1's 16 constants cannot normalise 32 channels: a file without its own is refused, saying what to do."""
    from safetensors.torch import save_file

    from uniworld_core import CheckpointError

    vae = WanVAE(VAEConfig(base_dim=8, z_dim=32))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(CheckpointError, match="32 latent channels and no 'latents_mean'.*save_vae"):
        load(tmp_path / "bare.safetensors", "vae")


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


def test_training_init_starts_as_an_image_autoencoder():
    """Frame-wise start: latent k is the encoding of frame 4k alone, and every decoded frame of a chunk
    is the decoding of that latent frame alone (no temporal taps yet)."""
    torch.manual_seed(0)
    vae = init_for_training(WanVAE(VAEConfig(base_dim=8))).eval()
    clip = _clips(1)
    clip = torch.cat([clip, clip.flip(2)], dim=2)[:, :, :9]  # 9 frames: latents 0, 1, 2
    with torch.no_grad():
        latents = vae.encode(clip, normalize=False)
        alone = [vae.encode(clip[:, :, 4 * k:4 * k + 1], normalize=False)[:, :, 0] for k in range(latents.shape[2])]
        assert torch.allclose(latents, torch.stack(alone, dim=2), atol=1e-5)
        decoded = vae.decode(latents, normalized=False, clamp=False)
        for k in range(1, latents.shape[2]):
            single = vae.decode(latents[:, :, k:k + 1], normalized=False, clamp=False)[:, :, 0]
            for frame in range(4 * k - 3, 4 * k + 1):
                assert torch.allclose(decoded[:, :, frame], single, atol=1e-5), (k, frame)
    assert (latents[:, :, 1] - latents[:, :, 2]).abs().max() > 1e-3  # different frames, different latents


def test_image_steps_then_clip_steps():
    clips = _clips(4)
    torch.manual_seed(0)
    vae = init_for_training(WanVAE(VAEConfig(base_dim=8, num_res_blocks=1)))
    held_out = _clips(1)
    losses = train_vae(vae, clips, VAETrainConfig(steps=3, image_steps=4, image_batch=4, batch_size=2, crop=16,
                                                   eval_every=1), held_out, log=None)
    assert len(losses) == 7 and all(loss == loss for loss in losses)


def test_unknown_reconstruction_loss_is_refused():
    with pytest.raises(ValueError, match="reconstruction"):
        VAETrainConfig(reconstruction="ssim")


def test_negative_latent_noise_is_refused():
    with pytest.raises(ValueError, match="latent_noise"):
        VAETrainConfig(latent_noise=-0.1)
