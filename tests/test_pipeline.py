"""The plain Python API and the main-job command, end to end on the tiny preset."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from uniworld_core.__main__ import main
from uniworld_core.errors import InputError, Interrupted
from uniworld_core.media import demo_image, read_webp, save_webp
from uniworld_core.presets.tiny import tiny_context, tiny_stack
from uniworld_core.sampling.pipeline import VideoSettings, decode_frames, generate, generate_latents
from uniworld_core.sampling.sampler import SamplerSettings
from uniworld_core.weights.registry import load_dit, load_vae

VIDEO = VideoSettings(width=64, height=48, num_frames=9, seed=3)
SAMPLER = SamplerSettings(steps=3)


def _inputs(seed=0):
    dit, vae = tiny_stack(seed)
    context, negative = tiny_context(dit.cfg.text_dim, dit.cfg.text_len, seed)
    image = torch.rand(80, 100, 3, generator=torch.Generator().manual_seed(seed))
    return dit, vae, image, context, negative


def test_generate_frames_shape_and_range():
    dit, vae, image, context, negative = _inputs()
    frames = generate(dit, vae, image, context, negative, VIDEO, SAMPLER)
    assert frames.shape == (9, 48, 64, 3)
    assert frames.min() >= 0 and frames.max() <= 1
    assert frames.std() > 0.01  # something was drawn


def test_seed_determines_the_video():
    dit, vae, image, context, negative = _inputs()
    a = generate_latents(dit, vae, image, context, negative, VIDEO, SAMPLER)
    b = generate_latents(dit, vae, image, context, negative, VIDEO, SAMPLER)
    c = generate_latents(dit, vae, image, context, negative,
                         VideoSettings(width=64, height=48, num_frames=9, seed=4), SAMPLER)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_progress_hook_sees_every_step_and_can_interrupt():
    dit, vae, image, context, negative = _inputs()
    seen = []

    def hook(done, total, preview):
        seen.append((done, total, tuple(preview.shape)))
        if done == 2:
            raise Interrupted("stop")

    with pytest.raises(Interrupted):
        generate_latents(dit, vae, image, context, negative, VIDEO, SamplerSettings(steps=5), hook)
    assert [s[:2] for s in seen] == [(1, 5), (2, 5)]
    assert seen[0][2] == (1, 16, 3, 6, 8)


def test_files_round_trip_through_the_loaders(tmp_path):
    """Saved tiny weights (ComfyUI prefix for the DiT) reload to the same video."""
    from safetensors.torch import save_file

    dit, vae, image, context, negative = _inputs(seed=5)
    save_file({f"model.diffusion_model.{k}": v for k, v in dit.state_dict().items()},
              tmp_path / "dit.safetensors")
    torch.save(vae.state_dict(), tmp_path / "vae.pth")
    dit2 = load_dit(tmp_path / "dit.safetensors", torch.device("cpu"), torch.float32)
    vae2 = load_vae(tmp_path / "vae.pth", torch.device("cpu"), torch.float32)
    assert dit2.cfg == dit.cfg and vae2.cfg == vae.cfg
    a = generate_latents(dit, vae, image, context, negative, VIDEO, SAMPLER)
    b = generate_latents(dit2, vae2, image, context, negative, VIDEO, SAMPLER)
    assert torch.equal(a, b)
    assert torch.equal(decode_frames(vae, a), decode_frames(vae2, b))


def test_main_job_command_writes_animated_webp(tmp_path, capsys):
    out = tmp_path / "demo.webp"
    assert main(["generate", "--preset", "tiny", "--out", str(out), "--width", "64", "--height", "48",
                 "--frames", "9", "--steps", "2"]) == 0
    assert "random weights" in capsys.readouterr().out
    with Image.open(out) as img:
        assert img.format == "WEBP" and img.size == (64, 48)
    assert read_webp(out).shape == (9, 48, 64, 3)


def test_webp_frames_that_do_not_change_read_back_as_frames(tmp_path):
    """libwebp stores a repeated frame as a longer showing of the one before; reading counts it again."""
    moving = torch.stack([demo_image(32, 32, seed) for seed in range(4)])
    frames = torch.cat([moving[:2], moving[1:2].expand(3, -1, -1, -1), moving[2:]])  # frame 1 shown 4 times
    path = save_webp(frames, tmp_path / "still.webp")
    with Image.open(path) as img:
        assert img.n_frames < frames.shape[0]  # what the file stores
    back = read_webp(path)
    assert back.shape == frames.shape
    assert (back - frames).abs().mean() < 0.05  # lossy, quality 90
    with pytest.raises(InputError, match="could not be read as a video"):
        read_webp(tmp_path / "missing.webp")


def test_main_job_reports_bad_settings(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "x.webp"), "--frames", "10"]) == 2
    assert "--frames 10; expected a frame count of the form 4k+1" in capsys.readouterr().err
