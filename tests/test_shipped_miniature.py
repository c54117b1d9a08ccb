"""The shipped miniature model, run through the main-job command, still meets its card's thresholds.

Metrics come from bench/eval_miniature.py (written independently of the
training code) on held-out toy clips; every video is made by
`python -m uniworld_core generate`, exactly as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from PIL import Image

from uniworld_core.__main__ import main
from uniworld_core.media import read_webp
from uniworld_core.presets.miniature import DIR_VARIABLE, MINIATURE_DIR, available

sys.path.insert(0, str(REPO / "bench"))
from eval_miniature import evaluate  # noqa: E402

CLIPS = 12  # each of the four styles three times


@pytest.fixture(autouse=True)
def _shipped_model(monkeypatch):
    monkeypatch.delenv(DIR_VARIABLE, raising=False)  # the model inside the package, not a build elsewhere


def _card() -> dict:
    return json.loads((MINIATURE_DIR / "card.json").read_text())


def test_the_miniature_model_is_shipped_within_budget():
    assert available(MINIATURE_DIR), f"the built-in model is missing from {MINIATURE_DIR}"
    size = sum(p.stat().st_size for p in MINIATURE_DIR.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MiB"
    assert _card()["metrics"]["style_accuracy"] >= _card()["thresholds"]["style_accuracy"]


def test_readme_main_job_runs_the_miniature_model(tmp_path):
    out = tmp_path / "demo.webp"
    done = subprocess.run([sys.executable, "-m", "uniworld_core", "generate", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "miniature model" in done.stdout and "random weights" not in done.stdout
    video = read_webp(out)
    assert video.shape == (17, 64, 64, 3), video.shape


def test_metrics_through_the_main_job_stay_above_the_card_thresholds(tmp_path):
    counter = iter(range(10**6))

    def generate_clip(first_frame, caption, style):
        n = next(counter)
        image, out = tmp_path / f"in{n}.png", tmp_path / f"out{n}.webp"
        Image.fromarray((first_frame * 255).round().to(torch.uint8).numpy()).save(image)
        assert main(["generate", "--image", str(image), "--prompt", caption, "--style", style, "--out", str(out)]) == 0
        return read_webp(out)

    metrics = evaluate(generate_clip, clips=CLIPS)
    limits = _card()["thresholds"]
    assert metrics["first_frame_psnr"] > metrics["static_copy_psnr"] + limits["psnr_margin_db"], metrics
    assert metrics["motion"] > metrics["motion_threshold"], metrics
    assert metrics["leakage_free_share"] >= limits["leakage_free_share"], metrics
    assert metrics["style_accuracy"] >= limits["style_accuracy"], metrics


def test_toy_workflow_runs_headless_on_the_shipped_model(tmp_path):
    import av

    done = subprocess.run([sys.executable, str(REPO / "run_workflow.py"), str(REPO / "workflows" /
                           "toy_world_miniature.json"), "--input", str(MINIATURE_DIR / "examples"),
                           "--output", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    videos = list(tmp_path.rglob("uniworld_toy_*.mp4"))
    assert len(videos) == 1, done.stdout[-2000:]
    with av.open(str(videos[0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 17 and frames[0].shape == (64, 64, 3)
