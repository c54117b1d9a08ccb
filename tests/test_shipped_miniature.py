"""The shipped miniature model, run through the main-job command, still meets its card's thresholds.

Metrics come from bench/eval_miniature.py (written independently of the
training code) on held-out toy clips; every video is made by
`python -m uniworld_core generate`, exactly as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from uniworld_core.__main__ import main
from uniworld_core.miniature import MINIATURE_DIR, available

sys.path.insert(0, str(REPO / "bench"))
from eval_miniature import evaluate  # noqa: E402

# Active once trained weights are committed to uniworld_core/miniature_model (issue #8): until then the
# recipe's VAE does not train (docs/training.md), and nothing that fails its card is shipped.
pytestmark = pytest.mark.skipif(not available(MINIATURE_DIR), reason="no miniature model shipped yet (issue #8)")

CLIPS = 10  # every one of the four styles at least twice


def _card() -> dict:
    return json.loads((MINIATURE_DIR / "card.json").read_text())


def test_the_miniature_model_is_shipped_within_budget():
    assert available(), f"the built-in model is missing from {MINIATURE_DIR}"
    size = sum(p.stat().st_size for p in MINIATURE_DIR.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MiB"
    assert _card()["metrics"]["style_accuracy"] >= _card()["thresholds"]["style_accuracy"]


def test_readme_main_job_runs_the_miniature_model(tmp_path):
    out = tmp_path / "demo.webp"
    done = subprocess.run([sys.executable, "-m", "uniworld_core", "generate", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "miniature model" in done.stdout and "random weights" not in done.stdout
    with Image.open(out) as video:
        assert video.n_frames == 17 and video.size == (64, 64)


def _read_webp(path) -> torch.Tensor:
    frames = []
    with Image.open(path) as video:
        for i in range(video.n_frames):
            video.seek(i)
            frames.append(torch.from_numpy(np.asarray(video.convert("RGB"), dtype=np.float32) / 255))
    return torch.stack(frames)


def test_metrics_through_the_main_job_stay_above_the_card_thresholds(tmp_path):
    counter = iter(range(10**6))

    def generate_clip(first_frame, caption, style):
        n = next(counter)
        image, out = tmp_path / f"in{n}.png", tmp_path / f"out{n}.webp"
        Image.fromarray((first_frame * 255).round().to(torch.uint8).numpy()).save(image)
        assert main(["generate", "--image", str(image), "--prompt", caption, "--style", style, "--out", str(out)]) == 0
        return _read_webp(out)

    metrics = evaluate(generate_clip, clips=CLIPS)
    limits = _card()["thresholds"]
    assert metrics["first_frame_psnr"] > metrics["static_copy_psnr"] + limits["psnr_margin_db"], metrics
    assert metrics["motion"] > metrics["motion_threshold"], metrics
    assert metrics["leakage_free_share"] >= limits["leakage_free_share"], metrics
    assert metrics["style_accuracy"] >= limits["style_accuracy"], metrics
