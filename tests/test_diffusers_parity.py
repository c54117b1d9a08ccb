"""Parity with diffusers' WanTransformer3DModel and AutoencoderKLWan.

diffusers is an independent implementation of the same architecture: random
weights are converted from its layout to ours with `uniworld_core.weights.keymaps`
(the same mapping the loaders use) and both models must agree.
"""

from __future__ import annotations

import pytest
import torch
from conftest import relative_error

diffusers = pytest.importorskip("diffusers")

from uniworld_core.model.config import DiTConfig, VAEConfig  # noqa: E402
from uniworld_core.model.dit import WanDiT  # noqa: E402
from uniworld_core.model.vae import WanVAE  # noqa: E402
from uniworld_core.weights.registry import official_state  # noqa: E402

TOL = 1e-4


def _randomize(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Perturb every parameter so zero-initialised layers take part too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


@pytest.mark.parametrize("heads,head_dim,layers,batch,grid", [
    (2, 16, 2, 1, (3, 8, 12)),
    (4, 12, 3, 2, (5, 6, 10)),
])
def test_dit_matches_diffusers(heads, head_dim, layers, batch, grid):
    torch.manual_seed(0)
    dim, text_dim, freq_dim, ffn = heads * head_dim, 24, 32, 2 * heads * head_dim
    theirs = diffusers.WanTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16, out_channels=16,
        text_dim=text_dim, freq_dim=freq_dim, ffn_dim=ffn, num_layers=layers).eval()
    _randomize(theirs, seed=1)
    ours = WanDiT(DiTConfig(dim=dim, ffn_dim=ffn, num_heads=heads, num_layers=layers,
                            freq_dim=freq_dim, text_dim=text_dim, text_len=7, flashi2v=False)).eval()
    ours.load_state_dict(official_state(theirs.state_dict()), strict=True)

    x = torch.randn(batch, 16, *grid)
    t = torch.tensor([999.0, 312.5][:batch])
    context = torch.randn(batch, 7, text_dim)
    with torch.no_grad():
        expected = theirs(hidden_states=x, timestep=t, encoder_hidden_states=context,
                          return_dict=False)[0]
        actual = ours(x, t, context)
    assert relative_error(actual, expected) <= TOL


@pytest.fixture(scope="module")
def vae_pair():
    torch.manual_seed(0)
    theirs = diffusers.AutoencoderKLWan(base_dim=8, z_dim=16).eval()
    _randomize(theirs, seed=2, scale=0.02)
    ours = WanVAE(VAEConfig(base_dim=8)).eval()
    ours.load_state_dict(official_state(theirs.state_dict()), strict=True)
    return theirs, ours


def test_vae_encode_matches_diffusers(vae_pair):
    theirs, ours = vae_pair
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        expected = theirs.encode(video).latent_dist.mean
    assert relative_error(ours.encode(video, normalize=False), expected) <= TOL


def test_vae_decode_matches_diffusers(vae_pair):
    theirs, ours = vae_pair
    latents = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = theirs.decode(latents).sample  # diffusers clamps to [-1, 1]
    assert relative_error(ours.decode(latents, normalized=False, clamp=True), expected) <= TOL
