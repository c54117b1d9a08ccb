"""The miniature-model recipe runs end to end (quick mode), and its outputs load and generate."""

from __future__ import annotations

import json

import torch

from training.miniature import QUICK, TOY_TOKENS, build
from uniworld_core.checkpoints import load
from uniworld_core.pipeline import VideoSettings, generate
from uniworld_core.sampler import SamplerSettings
from uniworld_core.vlm import VLMEncoder, load_adapter, load_vlm


def test_quick_recipe_trains_every_part_and_the_result_generates(tmp_path):
    card = build(tmp_path, QUICK, log=lambda *a: None)
    weights = tmp_path / "weights"
    assert card["cached_clips"] == QUICK.clips * 5
    assert json.loads((weights / "card.json").read_text())["bytes"] == card["bytes"] < 25 * 2**20
    dit = load(weights / "toy_dit.safetensors", "dit").model
    vae = load(weights / "toy_vae.safetensors", "vae").model
    assert dit.cfg == QUICK.dit
    model, processor = load_vlm(weights / "toy_vlm", torch.float32)
    adapter = load_adapter(weights / "toy_adapter.safetensors", vlm_hidden=QUICK.vlm_hidden)
    encoder = VLMEncoder(model, processor, adapter, max_length=TOY_TOKENS, image_size=(56, 56))
    image = torch.rand(QUICK.size, QUICK.size, 3)
    context = encoder.encode(image, "a small red circle slides over grass, neon style")
    negative = encoder.encode(image, "")
    frames = generate(dit, vae, image, context, negative,
                      VideoSettings(width=QUICK.size, height=QUICK.size, num_frames=QUICK.frames),
                      SamplerSettings(steps=2))
    assert frames.shape == (QUICK.frames, QUICK.size, QUICK.size, 3) and torch.isfinite(frames).all()
