"""Training data, cache and the training command: bad entries are skipped and counted, runs resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from PIL import Image
from safetensors.torch import load_file, save_file

from training.cache import CachedClips, build_cache
from training.config import TrainConfig
from training.data import ClipDataset, read_meta
from training.run import train
from uniworld_core.model.config import DiTConfig, VAEConfig
from uniworld_core.model.dit import WanDiT
from uniworld_core.model.vae import WanVAE

TEXT_DIM = 24


def _frames(folder, count, size=(40, 56), seed=0):
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    for i in range(count):
        pixels = (torch.rand(*size, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def _video(path, count, size=(40, 56)):
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.height, stream.width, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(count):
            frame = torch.full((*size, 3), i * 20 % 255, dtype=torch.uint8).numpy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture
def meta(tmp_path):
    _frames(tmp_path / "clip_a", 9)
    _frames(tmp_path / "clip_b", 9, seed=1)
    _frames(tmp_path / "short", 3)
    _video(tmp_path / "clip_c.mp4", 12)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 50)
    entries = [{"path": "clip_a", "cap": "a red ball rolls", "fps": 16},
               {"path": "clip_b", "cap": "a cat walks", "style": "watercolor", "fps": 16},
               {"path": "clip_c.mp4", "cap": "lights fade"},
               {"path": "short", "cap": "too short", "fps": 16},
               {"path": "missing_dir", "cap": "gone"},
               {"path": "broken.mp4", "cap": "corrupt"},
               {"path": "clip_a", "cap": ""},
               {"cap": "no path"}]
    (tmp_path / "meta.json").write_text(json.dumps(entries))
    return tmp_path / "meta.json"


def test_bad_entries_are_skipped_with_reasons_and_counted(meta):
    entries, skipped = read_meta(meta)
    assert len(entries) == 6 and skipped == {"no caption": 1, "no path": 1}
    dataset = ClipDataset(entries, num_frames=5, train_fps=16, buckets=((32, 48), (48, 32)))
    items = [dataset[i] for i in range(len(dataset))]
    good = [i for i in items if i is not None]
    assert len(good) == 3
    assert all(i["video"].shape == (3, 5, 32, 48) for i in good)
    assert all(-1 <= i["video"].min() and i["video"].max() <= 1 for i in good)
    assert dataset.skipped == {"too short": 1, "missing file": 1, "corrupt video": 1}


class FeatureStandIn:
    """A prompt encoder for the cache test: deterministic features from the prompt text."""

    def features(self, image, prompt):
        gen = torch.Generator().manual_seed(sum(map(ord, prompt)) % 2**31)
        return torch.randn(1, 6, TEXT_DIM, generator=gen)


def _cache(meta, out):
    entries, _ = read_meta(meta)
    dataset = ClipDataset(entries, num_frames=5, train_fps=16, buckets=((32, 48),))
    torch.manual_seed(0)
    return build_cache(dataset, WanVAE(VAEConfig(base_dim=8)).eval(), FeatureStandIn(), out)


def test_cache_round_trip(meta, tmp_path):
    manifest = _cache(meta, tmp_path / "cache")
    assert manifest["cached"] == 3 and sum(manifest["skipped"].values()) == 3
    data = CachedClips(tmp_path / "cache")
    assert len(data) == 3 and data.shapes[0] == (16, 2, 4, 6)
    assert data[0]["features"].shape == (6, TEXT_DIM) and data.empty.shape == (6, TEXT_DIM)


def test_batched_cache_equals_one_clip_at_a_time(tmp_path):
    """Batches of renderings (with a condition image) and a skipped entry between them: the same files as one by
    one, numbered by the meta entry, up to float noise."""
    from training.toyworld import write_dataset

    meta = write_dataset(tmp_path / "toy", clips=2, frames=5, size=32, styles=("photo", "neon", "pencil sketch"))
    entries, _ = read_meta(meta)
    entries.insert(2, entries[0].__class__(entries[0].path, "x", image=tmp_path / "toy" / "gone.png"))
    dataset = lambda: ClipDataset(entries, num_frames=5, train_fps=16, buckets=((32, 32),))  # noqa: E731
    torch.manual_seed(0)
    vae = WanVAE(VAEConfig(base_dim=8)).eval()
    one = build_cache(dataset(), vae, FeatureStandIn(), tmp_path / "one")
    batched = build_cache(dataset(), vae, FeatureStandIn(), tmp_path / "batched", batch_size=5)
    assert one == batched == {"cached": 6, "skipped": {"missing file": 1}}
    names = sorted(p.name for p in (tmp_path / "one").glob("clip_*"))
    assert names == sorted(p.name for p in (tmp_path / "batched").glob("clip_*"))
    assert "clip_000002.safetensors" not in names
    for name in names:
        a, b = load_file(tmp_path / "one" / name), load_file(tmp_path / "batched" / name)
        assert a.keys() == b.keys() == {"latents", "features", "start_latents"}
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-5), (name, key)


def test_training_command_runs_and_resumes(meta, tmp_path):
    _cache(meta, tmp_path / "cache")
    torch.manual_seed(0)
    save_file(WanDiT(DiTConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=1, freq_dim=32,
                               text_dim=TEXT_DIM)).state_dict(), str(tmp_path / "dit.safetensors"))
    cfg = dict(mode="lora", steps=3, batch_size=1, lr=1e-3, lora_rank=4, output_dir=str(tmp_path / "run"))
    first = train(TrainConfig(**cfg), tmp_path / "cache", tmp_path / "dit.safetensors")
    assert first.name == "lora.safetensors" and first.is_file()
    longer = train(TrainConfig(**{**cfg, "steps": 5}), tmp_path / "cache", tmp_path / "dit.safetensors")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5], "the second run resumed at step 3"
    assert longer.is_file()


def _train_in_two_processes(tmp_path, batch_size: int) -> subprocess.CompletedProcess:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(dict(mode="lora", steps=2, batch_size=batch_size, lr=1e-3, lora_rank=4,
                                      output_dir=str(tmp_path / "run"))))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29535", "-m", "training", "train", "--config", str(config), "--cache",
                           str(tmp_path / "cache"), "--dit", str(tmp_path / "dit.safetensors")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_the_training_command_in_two_processes_ends_cleanly(meta, tmp_path):
    """`torchrun -m training train`: both processes train, one exports, and every process exits with 0;
    a batch the processes cannot share is refused with what to do."""
    _cache(meta, tmp_path / "cache")
    torch.manual_seed(0)
    save_file(WanDiT(DiTConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=1, freq_dim=32,
                               text_dim=TEXT_DIM)).state_dict(), str(tmp_path / "dit.safetensors"))
    refused = _train_in_two_processes(tmp_path, batch_size=1)
    assert refused.returncode != 0
    assert "error: batch_size 1 is not a multiple of the 2 data-parallel shares" in refused.stderr
    assert "set batch_size to a multiple of 2" in refused.stderr
    assert "training/run.py" not in refused.stderr, "a clear error, not our traceback (torchrun adds its own)"
    done = _train_in_two_processes(tmp_path, batch_size=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "export" / "lora.safetensors").is_file()
    assert "terminate called" not in done.stderr


TWO_PROCESS = r"""
import os, sys, torch
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
from test_training import clips, _model, _padded
from training.config import TrainConfig
from training.trainer import Trainer
data = _padded(clips())  # 4 clips
world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
share = 4 // world
mine = {{k: v[rank * share:(rank + 1) * share] for k, v in data.items()}}
trainer = Trainer(_model(), TrainConfig(mode="lora", steps=2, lr=1e-2, lora_rank=4, seed=5, text_drop=0.5,
                                        warmup_steps=3, schedule="cosine"))
trainer.train_step(mine)  # two steps in warmup: a schedule that advanced once per process would show
trainer.train_step(mine)
if rank == 0:
    torch.save({{n: p.detach() for n, p in trainer.params.items()}}, sys.argv[1])
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()  # as training.run.train does
# The group must really be gone: gloo threads alive at exit can abort a finished run (SIGABRT).
if os.path.isdir("/proc/self/task"):
    left = [open(f"/proc/self/task/{{t}}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    if any("gloo" in name for name in left):
        sys.exit(f"gloo threads still running after end_training: {{left}}")
"""


def test_two_processes_equal_one_process_on_the_combined_batch(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(TWO_PROCESS.format(repo=str(REPO), tests=str(REPO / "tests")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    for command in ([str(script), str(tmp_path / "one.pt")],
                    ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", str(script),
                     str(tmp_path / "two.pt")]):
        done = subprocess.run([sys.executable, *command], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-6000:]
    one, two = (torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt"))
    assert one.keys() == two.keys()
    changed = 0
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6, rtol=1e-5), name
        changed += int(not torch.equal(one[name], torch.zeros_like(one[name])))
    assert changed > 0


def test_validation_clips_are_written_and_logged(meta, tmp_path):
    _cache(meta, tmp_path / "cache")
    torch.manual_seed(0)
    save_file(WanDiT(DiTConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=1, freq_dim=32,
                               text_dim=TEXT_DIM)).state_dict(), str(tmp_path / "dit.safetensors"))
    save_file(WanVAE(VAEConfig(base_dim=8)).state_dict(), str(tmp_path / "vae.safetensors"))
    cfg = TrainConfig(mode="lora", steps=4, lora_rank=4, validate_every=2, validation_steps=2,
                      output_dir=str(tmp_path / "run"))
    train(cfg, tmp_path / "cache", tmp_path / "dit.safetensors", vae_path=str(tmp_path / "vae.safetensors"))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    checks = [r for r in log if "validation_loss" in r]
    assert [r["step"] for r in checks] == [2, 4]
    with Image.open(checks[-1]["validation_clip"]) as clip:
        assert clip.n_frames == 5 and clip.size == (48, 32)


@pytest.mark.parametrize("storage", ["Q8_0", "fp8_e4m3fn"])
def test_lora_trains_on_a_frozen_quantised_base(tmp_path, storage):
    from test_training import _padded, clips

    from training.trainer import Trainer
    from uniworld_core.weights.quantize import quantize_file
    from uniworld_core.weights.registry import load

    torch.manual_seed(0)
    cfg = DiTConfig(dim=256, ffn_dim=256, num_heads=2, num_layers=1, freq_dim=32, text_dim=24)
    save_file(WanDiT(cfg).state_dict(), str(tmp_path / "dit.safetensors"))
    suffix = "safetensors" if storage.startswith("fp8") else "gguf"
    base = load(quantize_file(tmp_path / "dit.safetensors", tmp_path / f"q.{suffix}", storage), "dit").model
    stored = {n: p.clone() for n, p in base.named_parameters()}
    trainer = Trainer(base, TrainConfig(mode="lora", steps=3, lr=1e-2, lora_rank=4, text_drop=0.0))
    losses = [trainer.train_step(_padded(clips())) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(p.abs().sum() > 0 for n, p in trainer.params.items() if ".up." in n), "LoRA B was updated"
    for name, p in base.named_parameters():
        assert torch.equal(p, stored[name]), f"{name} of the frozen base changed"


def test_ema_weights_swap_in_and_back():
    from test_training import _model, _padded, clips

    from training.trainer import Trainer

    trainer = Trainer(_model(), TrainConfig(mode="full", steps=2, lr=1e-2, ema_decay=0.5))
    trainer.train_step(_padded(clips()))
    name = next(iter(trainer.params))
    live = trainer.params[name].detach().clone()
    with trainer.ema_weights():
        assert torch.equal(trainer.params[name], trainer.ema.shadow[name])
    assert torch.equal(trainer.params[name], live)


def test_condition_image_other_than_the_first_frame(tmp_path):
    """I2SV: the unstyled photo conditions a styled clip; its latent is cached and trained on."""
    from training.toyworld import write_dataset

    meta = write_dataset(tmp_path / "toy", clips=1, frames=5, size=32, styles=("neon",))
    entries, _ = read_meta(meta)
    entries.append(entries[0].__class__(entries[0].path, "x", image=tmp_path / "toy" / "gone.png"))
    dataset = ClipDataset(entries, num_frames=5, train_fps=16, buckets=((32, 32),))
    torch.manual_seed(0)
    vae = WanVAE(VAEConfig(base_dim=8)).eval()
    manifest = build_cache(dataset, vae, FeatureStandIn(), tmp_path / "cache")
    assert manifest == {"cached": 1, "skipped": {"missing file": 1}}
    clip = CachedClips(tmp_path / "cache")[0]
    photo = dataset[0]["image"]
    assert torch.allclose(clip["start_latents"], vae.encode_image(photo[None])[0], atol=1e-6)
    assert not torch.allclose(clip["start_latents"], clip["latents"][:, :1], atol=1e-3), "neon != photo"

    from test_training import _model

    from training.objective import ObjectiveConfig, draw, flashi2v_loss

    dit, objective = _model(), ObjectiveConfig(text_drop=0.0)
    latents, context = clip["latents"][None], torch.zeros(1, 6, 24)
    draws = draw(tuple(latents.shape), objective, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in dit.learnable_proj.parameters():
            p.add_(0.1)  # a trained projection, so the condition matters
        own = flashi2v_loss(dit, latents, context, context, objective, draws=draws)
        photo_cond = flashi2v_loss(dit, latents, context, context, objective, draws=draws,
                                   start=clip["start_latents"][None])
    assert not torch.isclose(own, photo_cond)
