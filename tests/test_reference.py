"""Every tensor of every FlashI2V reference file, reproduced by our code.

Configs, shapes, seeds and the list of checks come from each file's metadata
and keys, so files with other configs (more layers, batch 2, other grids)
run through the same test.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import Reference, reference_files, relative_error

from uniworld_core.model.config import DiTConfig, VAEConfig
from uniworld_core.model.dit import WanDiT
from uniworld_core.model.fourier import high_frequency
from uniworld_core.model.vae import WanVAE
from uniworld_core.sampling.sampler import SamplerSettings, sample
from uniworld_core.sampling.schedule import inference_sigmas, training_pair

FORWARD_TOL = 1e-4  # single forwards
RUN_TOL = 1e-3  # the 4-step sampling run and the VAE

FILES = reference_files("flashi2v_ref_*.safetensors")


def test_reference_files_present():
    assert FILES, "no flashi2v_ref_*.safetensors in tests/reference, ../shared/reference or $UNIWORLD_REFERENCE_DIR"


@pytest.fixture(scope="module", params=FILES, ids=lambda p: p.name)
def ref(request) -> Reference:
    return Reference(request.param)


@pytest.fixture(scope="module")
def dit(ref) -> WanDiT:
    model = WanDiT(DiTConfig.from_dict(ref.meta["dit_config"])).eval()
    model.load_state_dict(ref.with_prefix("weight."), strict=True)
    return model


def test_dit_forward(ref, dit):
    with torch.no_grad():
        out = dit(ref.tensors["in.x"], ref.tensors["in.t"], ref.tensors["in.context"],
                  ref.tensors["in.fourier_features"])
    assert relative_error(out, ref.tensors["out.velocity"]) <= FORWARD_TOL


def test_fourier_features(ref):
    latent = ref.tensors["fourier.in.start_frame_latents"]
    outputs = {k: v for k, v in ref.tensors.items() if k.startswith("fourier.out.")}
    assert outputs, "file has no fourier.out.* tensors"
    for key, expected in outputs.items():
        name = key[len("fourier.out."):]
        if m := re.fullmatch(r"ratio_([0-9.]+)(_real)?", name):
            actual = high_frequency(latent, float(m.group(1)), magnitude=m.group(2) is None)
        elif m := re.fullmatch(r"cutoff_radius_([0-9.]+)", name):
            actual = high_frequency(latent, cutoff_radius=float(m.group(1)))
        else:
            pytest.fail(f"unknown Fourier reference {key}")
        assert relative_error(actual, expected) <= FORWARD_TOL, key


def test_schedules(ref):
    for key, expected in ref.tensors.items():
        if m := re.fullmatch(r"schedule\.sigmas_(\d+)_shift([0-9.]+)", key):
            actual = inference_sigmas(int(m.group(1)), float(m.group(2)))
            assert relative_error(actual, expected) <= FORWARD_TOL, key
    settings = ref.meta["sample"]
    actual = inference_sigmas(settings["steps"], settings["shift"])
    assert relative_error(actual, ref.tensors["sample.sigmas"]) <= FORWARD_TOL


def test_training_interpolation(ref, dit):
    t = ref.tensors
    with torch.no_grad():
        proj = dit.learnable_proj(t["fourier.in.start_frame_latents"])
    x_t, target = training_pair(t["train.in.clean"], t["train.in.noise"], t["train.in.sigma"], proj)
    assert relative_error(x_t, t["train.out.x_t"]) <= FORWARD_TOL
    assert relative_error(target, t["train.out.target"]) <= FORWARD_TOL


@pytest.mark.parametrize("batch_cfg", [True, False], ids=["cfg-batched", "cfg-sequential"])
def test_sampling_run(ref, dit, batch_cfg):
    t, s = ref.tensors, ref.meta["sample"]
    assert s.get("timestep", "sigma*1000") == "sigma*1000"
    settings = SamplerSettings(steps=s["steps"], shift=s["shift"], guidance_scale=s["guidance_scale"],
                               fourier_ratio=s["fourier_energy_ratio"], batch_cfg=batch_cfg)
    latents = sample(dit, t["sample.in.noise"], t["sample.in.start_frame_latents"], t["in.context"],
                     t["sample.in.negative_context"], settings)
    assert relative_error(latents, t["sample.out.latents"]) <= RUN_TOL


@pytest.fixture(scope="module")
def vae(ref) -> WanVAE:
    if not ref.has("vae.in.video"):
        pytest.skip(f"{ref.path.name} carries no VAE vectors")
    model = WanVAE(VAEConfig.from_dict(ref.meta["vae_config"])).eval()
    model.load_state_dict(ref.with_prefix("vae.weight."), strict=True)
    model.set_latent_stats(ref.tensors["vae.latents_mean"], ref.tensors["vae.latents_std"])
    return model


def test_vae_encode(ref, vae):
    latents = vae.encode(ref.tensors["vae.in.video"])
    assert relative_error(latents, ref.tensors["vae.out.latents"]) <= RUN_TOL


def test_vae_decode_unclamped(ref, vae):
    decoded = vae.decode(ref.tensors["vae.out.latents"], clamp=False)
    assert relative_error(decoded, ref.tensors["vae.out.decoded"]) <= RUN_TOL
