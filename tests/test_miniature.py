"""The miniature-model recipe runs end to end (quick mode), and its outputs load and generate."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from training.miniature import QUICK, TOY_TOKENS, Recipe, build, latent_object_mask, vae_config
from training.toyworld import SIZES, position, random_clip
from uniworld_core.conditioning.vlm_encoder import VLMEncoder
from uniworld_core.media import read_webp
from uniworld_core.sampling.pipeline import VideoSettings, generate
from uniworld_core.sampling.sampler import SamplerSettings
from uniworld_core.weights.registry import load
from uniworld_core.weights.vlm import load_adapter, load_vlm


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
    cached = [load_file(str(f)) for f in sorted((tmp_path / "cache").glob("clip_*.safetensors"))]
    assert all(c["loss_mask"].shape == (1, *c["latents"].shape[1:]) for c in cached)


def test_latent_object_mask_marks_the_cells_under_the_objects_in_every_latent_frame():
    recipe = Recipe()
    vae_cfg = vae_config(recipe)
    for seed in range(6):
        clip = random_clip(seed)
        mask = latent_object_mask(seed, recipe, vae_cfg)[0]  # [F, h, w]
        cell = recipe.size // mask.shape[-1]
        assert mask.shape[0] == 1 + (recipe.frames - 1) // vae_cfg.temporal_factor
        for obj in clip.objects:
            for latent_frame, frame in ((0, 0), (mask.shape[0] - 1, recipe.frames - 1)):
                x, y = position(obj, frame)
                assert mask[latent_frame, int(y * recipe.size) // cell, int(x * recipe.size) // cell] == 1
        # no object reaches a cell whose every pixel is farther from all centres than the largest radius
        far = torch.ones_like(mask[0], dtype=torch.bool)
        for obj in clip.objects:
            for t in range(recipe.frames):
                x, y = position(obj, t)
                centres = (torch.arange(mask.shape[-1]) + 0.5) * cell / recipe.size
                near = (centres[None, :] - x).abs() < SIZES[obj.size] + cell / recipe.size
                near = near & ((centres[:, None] - y).abs() < SIZES[obj.size] + cell / recipe.size)
                far &= ~near
        assert (mask[:, far] == 0).all() and 0 < mask.mean() < 0.5


def test_vae_object_weights_cover_the_objects_and_2_px_around_them():
    import dataclasses

    from training.miniature import _vae_clips, _vae_weights
    from training.toyworld import STYLES, object_masks

    recipe = dataclasses.replace(Recipe(), vae_object_weight=4.0)
    weights = _vae_weights(recipe, 3, 5, 100)
    assert weights.shape == (3 * len(STYLES), 1, *_vae_clips(recipe, 3, 5, 100).shape[2:])
    for i in range(3):
        cover = object_masks(random_clip(100 + i), 5, recipe.size).amax(0)  # coverage in 0..1 (smooth edges)
        for style in range(len(STYLES)):  # one clip's renderings share its weights
            w = weights[i * len(STYLES) + style, 0]
            assert (w[cover == 1] == 5).all() and (w[cover > 0] > 1).all() and (w >= 1).all() and (w <= 5).all()
        grown = (w > 1) & (cover == 0)  # the border: within 2 px of the objects, and only there
        ys, xs = torch.nonzero(cover[0] > 0, as_tuple=True)
        for y, x in torch.nonzero(grown[0]).tolist():
            assert ((ys - y).abs().maximum((xs - x).abs()) <= 2).any()
        assert grown.any() and (w == 1).any()


def test_finished_vae_and_cache_stages_are_reused_only_for_the_same_recipe_fields(tmp_path):
    """A second build into the same folder skips the VAE and cache stages when their recipe fields are unchanged."""
    import dataclasses

    build(tmp_path, QUICK, log=lambda *a: None)
    vae_file = tmp_path / "weights" / "toy_vae.safetensors"
    first = vae_file.read_bytes()
    logged = []
    card = build(tmp_path, dataclasses.replace(QUICK, dit_steps=3), log=logged.append)
    assert card["reused_stages"] == ["vae", "cache", "long cache"], card["reused_stages"]  # not what follows the DiT
    assert any("vae: reusing" in line for line in logged) and any("cache: reusing" in line for line in logged)
    assert vae_file.read_bytes() == first
    logged.clear()
    card = build(tmp_path, dataclasses.replace(QUICK, vlm_hidden=QUICK.vlm_hidden * 2), log=logged.append)
    assert card["reused_stages"] == ["vae"]  # the cache holds the VLM's features: made again
    logged.clear()
    card = build(tmp_path, dataclasses.replace(QUICK, clips=QUICK.clips + 1), log=logged.append)
    assert card["reused_stages"] == ["vae"]  # more DiT data: the VAE trains on `vae_clips` alone
    assert card["cached_clips"] > build(tmp_path, QUICK, log=lambda *a: None)["cached_clips"]
    logged.clear()
    card = build(tmp_path, dataclasses.replace(QUICK, vae_steps=QUICK.vae_steps + 1), log=logged.append)
    assert card["reused_stages"] == [] and not any("reusing" in line for line in logged)
    assert vae_file.read_bytes() != first


def test_build_makes_every_stage_again_for_another_toy_world(tmp_path, monkeypatch):
    """A stage made from another version of the toy world's rendering is not reused; a record from before the
    world had a version counts as version 1."""
    import json

    import training.miniature as miniature

    build(tmp_path, QUICK, log=lambda *a: None)
    monkeypatch.setattr(miniature, "WORLD_VERSION", miniature.WORLD_VERSION + 1)
    logged = []
    card = build(tmp_path, QUICK, log=logged.append)
    assert card["reused_stages"] == [] and card["toy_world"] == miniature.WORLD_VERSION  # the card names its world
    assert not any("reusing" in line for line in logged)
    for name in (miniature.VAE_STAGE, miniature.CACHE_STAGE):  # as written before the version existed
        saved = json.loads((tmp_path / name).read_text())
        assert saved["recipe"].pop("toy_world") == miniature.WORLD_VERSION
        (tmp_path / name).write_text(json.dumps(saved))
    monkeypatch.setattr(miniature, "WORLD_VERSION", 1)
    assert build(tmp_path, QUICK, log=lambda *a: None)["reused_stages"] == ["vae", "cache", "dit"]
    monkeypatch.setattr(miniature, "WORLD_VERSION", 2)
    assert build(tmp_path, QUICK, log=lambda *a: None)["reused_stages"] == []


def test_stage_records_from_before_later_vae_fields_count_as_made_without_them(tmp_path):
    """Records written before `vae_object_weight` and `vae_z_dim` existed were made at weight 0, 16 channels."""
    import dataclasses

    import training.miniature as miniature

    old = dataclasses.replace(QUICK, vae_z_dim=16, dit=dataclasses.replace(QUICK.dit, in_dim=16, out_dim=16))
    build(tmp_path, old, log=lambda *a: None)
    for name in (miniature.VAE_STAGE, miniature.CACHE_STAGE):  # as written before the fields existed
        saved = json.loads((tmp_path / name).read_text())
        assert saved["recipe"].pop("vae_object_weight") == 0.0 and saved["recipe"].pop("vae_z_dim") == 16
        (tmp_path / name).write_text(json.dumps(saved))
    saved = json.loads((tmp_path / miniature.DIT_STAGE).read_text())
    assert saved["recipe"].pop("vae_object_weight") == 0.0 and saved["recipe"].pop("vae_z_dim") == 16
    (tmp_path / miniature.DIT_STAGE).write_text(json.dumps(saved))
    everything = ["vae", "cache", "dit", "long cache", "continuation"]
    assert build(tmp_path, old, log=lambda *a: None)["reused_stages"] == everything
    narrow = dataclasses.replace(old, vae_z_dim=4, dit=dataclasses.replace(old.dit, in_dim=4, out_dim=4))
    assert build(tmp_path, narrow, log=lambda *a: None)["reused_stages"] == []
    weighted = dataclasses.replace(old, vae_object_weight=4.0)
    assert build(tmp_path, weighted, log=lambda *a: None)["reused_stages"] == []
    assert build(tmp_path, weighted, log=lambda *a: None)["reused_stages"] == everything


def test_the_continuation_stage_trains_on_from_the_dit_stage_in_inference_shaped_windows(tmp_path):
    """`long_steps` adds long clips and a training that starts from the DiT stage's export; the DiT stage itself
    is reused when only the continuation stage's fields change, and a finished continuation stage is too."""
    import dataclasses

    import training.miniature as miniature

    base = dataclasses.replace(QUICK, context_frames=1, new_frames=1, long_steps=0)  # windows of 2 latent frames
    assert "long_steps" not in build(tmp_path, base, log=lambda *a: None)["continuation"]
    # copied: load_file's tensors may map the file, which the next build writes in place
    plain = {k: v.clone() for k, v in load_file(tmp_path / "weights" / "toy_dit.safetensors").items()}
    long = dataclasses.replace(base, long_steps=2, long_clips=1, long_frames=13)
    logged = []
    card = build(tmp_path, long, log=logged.append)
    assert card["reused_stages"] == ["vae", "cache", "dit"] and any("dit: reusing" in line for line in logged)
    assert {"long cache", "continuation"} <= set(card["stage_minutes"])
    assert card["continuation"]["long_steps"] == 2 and card["continuation"]["long_frames"] == 13
    cached = sorted((tmp_path / "long_cache").glob("clip_*.safetensors"))
    assert len(cached) == long.long_clips * 5
    clip = load_file(cached[0])
    assert clip["latents"].shape[1] == 4 and clip["loss_mask"].shape[1:] == clip["latents"].shape[1:]
    trained = {k: v.clone() for k, v in load_file(tmp_path / "weights" / "toy_dit.safetensors").items()}
    assert any(not torch.equal(trained[k], plain[k]) for k in plain)  # the shipped DiT is the continued one
    logged.clear()
    card = build(tmp_path, long, log=logged.append)
    assert card["reused_stages"] == ["vae", "cache", "dit", "long cache", "continuation"]
    assert card["continuation"]["long_steps"] == 2
    again = load_file(tmp_path / "weights" / "toy_dit.safetensors")
    assert all(torch.equal(again[k], trained[k]) for k in trained)  # deterministic, and not trained further
    record = json.loads((tmp_path / miniature.LONG_CACHE_STAGE).read_text())
    assert record["recipe"]["long_frames"] == 13
    card = build(tmp_path, dataclasses.replace(long, long_steps=3), log=lambda *a: None)
    assert card["reused_stages"] == ["vae", "cache", "dit", "long cache"]  # only the training runs again
    assert json.loads((tmp_path / "long_run" / "log.jsonl").read_text().splitlines()[-1])["step"] == 3


def test_main_job_with_real_files_prompt_and_style(tmp_path, capsys):
    """`python -m uniworld_core generate` with DiT, VAE, VLM folder and adapter files."""
    from PIL import Image

    from uniworld_core.__main__ import main

    build(tmp_path, QUICK, log=lambda *a: None)
    w = tmp_path / "weights"
    Image.fromarray((torch.rand(QUICK.size, QUICK.size, 3) * 255).to(torch.uint8).numpy()).save(tmp_path / "in.png")
    common = ["generate", "--dit", str(w / "toy_dit.safetensors"), "--vae", str(w / "toy_vae.safetensors"),
              "--vlm", str(w / "toy_vlm"), "--adapter", str(w / "toy_adapter.safetensors"),
              "--image", str(tmp_path / "in.png"), "--width", str(QUICK.size), "--height", str(QUICK.size),
              "--frames", str(QUICK.frames), "--steps", "2", "--precision", "fp32"]
    out = tmp_path / "video.webp"
    assert main([*common, "--prompt", "a red circle slides", "--style", "watercolor", "--out", str(out)]) == 0
    assert "shift 7, cfg 5" in capsys.readouterr().out  # weight files: the report's settings
    assert read_webp(out).shape == (QUICK.frames, QUICK.size, QUICK.size, 3)
    assert main([*common, "--style", "baroque", "--out", str(out)]) == 2
    assert "--style baroque" in capsys.readouterr().err


def test_main_job_defaults_to_the_miniature_model(tmp_path, monkeypatch, capsys):
    """Without --dit the command runs the miniature model on its first example (here a quick build)."""

    from uniworld_core.__main__ import main
    from uniworld_core.presets.miniature import examples

    build(tmp_path, QUICK, log=lambda *a: None)
    monkeypatch.setenv("UNIWORLD_MINIATURE_DIR", str(tmp_path / "weights"))
    out = tmp_path / "demo.webp"
    assert main(["generate", "--steps", "2", "--out", str(out)]) == 0
    example = examples()[0]
    printed = capsys.readouterr().out
    assert f"miniature model: '{example['prompt']}', style {example['style']}" in printed
    assert read_webp(out).shape == (QUICK.frames, QUICK.size, QUICK.size, 3)
    # the card's sampling settings are the defaults; flags win over them
    assert f"sampling: 2 steps, shift {QUICK.sample_shift:g}, cfg {QUICK.sample_cfg:g}" in printed
    card_file = tmp_path / "weights" / "card.json"
    card = json.loads(card_file.read_text())
    card_file.write_text(json.dumps({**card, "sampling": {"shift": 4.5, "cfg": 1.5, "steps": 1}}))
    assert main(["generate", "--cfg", "2.5", "--out", str(out)]) == 0
    assert "sampling: 1 steps, shift 4.5, cfg 2.5" in capsys.readouterr().out
    # the toy world's own styles come with the model; unknown ones are refused
    assert main(["generate", "--steps", "1", "--style", "neon", "--prompt", "a red circle", "--out", str(out)]) == 0
    assert main(["generate", "--steps", "1", "--style", "baroque", "--out", str(out)]) == 2


def test_without_the_miniature_model_the_command_falls_back_to_tiny(tmp_path, monkeypatch, capsys):
    from uniworld_core.__main__ import main

    monkeypatch.setenv("UNIWORLD_MINIATURE_DIR", str(tmp_path / "missing"))
    assert main(["generate", "--steps", "1", "--frames", "5", "--out", str(tmp_path / "v.webp")]) == 0
    printed = capsys.readouterr().out
    assert "miniature model is not installed" in printed and "random weights" in printed


def test_encoder_settings_travel_with_a_vlm_folder_and_bad_ones_are_named(tmp_path):
    from uniworld_core.conditioning.vlm_encoder import ENCODER_SETTINGS_FILE, encoder_settings
    from uniworld_core.errors import InputError

    assert encoder_settings(tmp_path) == {}  # the official model: its defaults
    (tmp_path / ENCODER_SETTINGS_FILE).write_text('{"max_length": 128, "image_size": [56, 56], "default_negative": ""}')
    assert encoder_settings(tmp_path) == {"max_length": 128, "image_size": (56, 56), "default_negative": ""}
    (tmp_path / ENCODER_SETTINGS_FILE).write_text('{"max_length": 128}')
    with pytest.raises(InputError, match="image_size") as error:
        encoder_settings(tmp_path)
    assert ENCODER_SETTINGS_FILE in str(error.value)


def test_a_card_sets_the_sampling_it_names_and_leaves_the_rest(tmp_path):
    from uniworld_core.presets import miniature

    (tmp_path / "card.json").write_text(json.dumps({"recipe": {"size": 32, "frames": 9},
                                                    "sampling": {"steps": 7, "fourier_ratio": 0.3}}))
    found = miniature.defaults(tmp_path)
    assert (found.width, found.height, found.frames, found.steps, found.fourier_ratio) == (32, 32, 9, 7, 0.3)
    assert (found.shift, found.cfg) == (miniature.DEFAULTS.shift, miniature.DEFAULTS.cfg)


def test_a_recipe_whose_dit_does_not_fit_its_vae_is_refused_before_any_stage():
    import dataclasses

    with pytest.raises(ValueError, match="reading 16 and predicting 16 latent channels for a VAE with 8"):
        dataclasses.replace(QUICK, vae_z_dim=8, dit=dataclasses.replace(QUICK.dit, in_dim=16, out_dim=16))
    factor = vae_config(QUICK).spatial_factor
    cell = factor * QUICK.dit.patch_size[1]
    with pytest.raises(ValueError, match=f"frames of {cell + factor} px do not split.*multiple of {cell}"):
        dataclasses.replace(QUICK, size=cell + factor)
    narrow = dataclasses.replace(QUICK, vae_z_dim=4, dit=dataclasses.replace(QUICK.dit, in_dim=4, out_dim=4))
    assert vae_config(narrow).z_dim == 4
