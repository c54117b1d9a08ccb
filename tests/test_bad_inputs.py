"""Impossible inputs get a clear InputError that says what was found and what is expected."""

from __future__ import annotations

import pytest
import torch

from uniworld_core.errors import InputError
from uniworld_core.media import fit_image
from uniworld_core.model.config import DIT_PRESETS, VAE_PRESETS
from uniworld_core.model.dit import WanDiT
from uniworld_core.model.fourier import fourier_features
from uniworld_core.model.vae import WanVAE
from uniworld_core.sampling.pipeline import VideoSettings, generate_latents, latent_shape


@pytest.fixture(scope="module")
def dit() -> WanDiT:
    return WanDiT(DIT_PRESETS["tiny"]).eval()


@pytest.fixture(scope="module")
def vae() -> WanVAE:
    return WanVAE(VAE_PRESETS["tiny"]).eval()


def _forward(dit, x, context):
    return dit(x, torch.tensor([500.0]), context, torch.zeros_like(x))


def test_wrong_latent_channels(dit):
    x = torch.zeros(1, 36, 1, 4, 4)  # e.g. Wan I2V's 36-channel input
    with pytest.raises(InputError, match=r"latents of shape \(1, 36, 1, 4, 4\).*16"):
        _forward(dit, x, torch.zeros(1, 4, dit.cfg.text_dim))


def test_odd_latent_size(dit):
    x = torch.zeros(1, 16, 1, 5, 4)
    with pytest.raises(InputError, match="multiples of 16 pixels"):
        _forward(dit, x, torch.zeros(1, 4, dit.cfg.text_dim))


def test_context_wider_than_text_dim(dit):
    x = torch.zeros(1, 16, 1, 4, 4)
    with pytest.raises(InputError, match=rf"\(1, 4, {dit.cfg.text_dim + 8}\).*{dit.cfg.text_dim}"):
        _forward(dit, x, torch.zeros(1, 4, dit.cfg.text_dim + 8))


def test_missing_fourier_features(dit):
    x = torch.zeros(1, 16, 1, 4, 4)
    with pytest.raises(InputError, match="Fourier features None"):
        dit(x, torch.tensor([1.0]), torch.zeros(1, 4, dit.cfg.text_dim))


@pytest.mark.parametrize("frames", [0, 2, 16, 48])
def test_frame_count_not_4k_plus_1(vae, frames):
    with pytest.raises(InputError, match=rf"{frames} frames.*4k\+1"):
        latent_shape(VideoSettings(width=64, height=64, num_frames=frames), vae)


def test_vae_rejects_bad_frame_count(vae):
    with pytest.raises(InputError, match="4k\\+1"):
        vae.encode(torch.zeros(1, 3, 6, 32, 32))


@pytest.mark.parametrize("width,height", [(840, 480), (832, 470), (8, 8)])
def test_impossible_resolution(vae, width, height):
    with pytest.raises(InputError, match=f"{width}x{height}.*multiples of 16"):
        latent_shape(VideoSettings(width=width, height=height, num_frames=17), vae)


def test_image_smaller_than_16px():
    with pytest.raises(InputError, match="12x40 pixels.*at least 16"):
        fit_image(torch.rand(40, 12, 3), 64, 64)


def test_image_wrong_layout():
    with pytest.raises(InputError, match=r"\(3, 64, 64\)"):
        fit_image(torch.rand(3, 64, 64), 64, 64)


def test_first_frame_must_be_one_frame():
    with pytest.raises(InputError, match="2 frames"):
        fourier_features(torch.zeros(1, 16, 2, 4, 4), 3, 0.1)


def test_generate_checks_context_before_any_work(dit, vae):
    bad = torch.zeros(1, 4, dit.cfg.text_dim + 1)
    with pytest.raises(InputError, match="features for this model"):
        generate_latents(dit, vae, torch.rand(64, 64, 3), bad,
                         video=VideoSettings(width=64, height=64, num_frames=5))
