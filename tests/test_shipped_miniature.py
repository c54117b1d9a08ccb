"""The shipped miniature model: its card tells the truth, measured through the main-job command.

The card (bench/eval_miniature.py --card) holds the metrics of the shipped
weights, their baselines and whether each of issue #20's bars is met. These
tests re-measure them and fail when the card and the model disagree; the bars
themselves are a strict xfail while the card says they are not met (so the
day a new model meets them, the test must be switched on).

Metrics come from bench/eval_miniature.py (written independently of the
training code) on held-out toy clips; every video is made by
`python -m uniworld_core generate`, exactly as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

from training.miniature import Recipe, _recipe_json
from training.toyworld import STYLES, WORLD_VERSION
from uniworld_core.media import read_webp
from uniworld_core.presets.miniature import DIR_VARIABLE, MINIATURE_DIR, available

sys.path.insert(0, str(REPO / "bench"))
from eval_miniature import BARS, checks, evaluate, main_job_generator, vae_round_trip  # noqa: E402

# (summary key, absolute tolerance): the card's numbers come from the same clips, seeds and command; only
# thread counts and CPU kernels may differ between machines
REPRODUCED = {"object_score": 0.02, "centroid_error_px": 0.5, "direction_accuracy": 0.11,
              "first_frame_psnr": 0.3, "first_frame_ssim": 0.02, "style_accuracy": 0.11}


@pytest.fixture(autouse=True)
def _shipped_model(monkeypatch):
    monkeypatch.delenv(DIR_VARIABLE, raising=False)  # the model inside the package, not a build elsewhere


def _card() -> dict:
    return json.loads((MINIATURE_DIR / "card.json").read_text())


def test_the_miniature_model_is_shipped_within_budget_with_its_card_and_sheets():
    assert available(MINIATURE_DIR), f"the built-in model is missing from {MINIATURE_DIR}"
    size = sum(p.stat().st_size for p in MINIATURE_DIR.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MiB"
    card = _card()
    assert card["bars"] == BARS and card["passes"] == all(card["checks"].values()), card["checks"]
    # Issue #20: the recipe within 2 hours on 2 CPU cores; issue #23: with its continuation stage, 2.5 hours
    single_run = sum(m for stage, m in card["stage_minutes"].items() if stage not in ("long cache", "continuation"))
    assert single_run <= 120, f"the recipe up to its DiT stage took {single_run} min on 2 CPU cores (bar 120)"
    assert card["minutes"] <= 150, f"the recipe took {card['minutes']} min on 2 CPU cores (bar 150)"
    assert card["recipe"] == _recipe_json(Recipe()), "the shipped weights are the recipe's defaults"
    # The evaluation renders its truth with today's toy world: weights of another world would be measured on
    # clips they never learned (rebuild and ship them with the world's change)
    assert card.get("toy_world", 1) == WORLD_VERSION, "the shipped weights were trained on another toy world"
    for style in STYLES[1:]:
        assert (MINIATURE_DIR / "sheets" / f"{style.replace(' ', '_')}.png").is_file(), style


def test_readme_main_job_runs_the_miniature_model(tmp_path):
    out = tmp_path / "demo.webp"
    done = subprocess.run([sys.executable, "-m", "uniworld_core", "generate", "--out", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "miniature model" in done.stdout and "random weights" not in done.stdout
    video = read_webp(out)
    size, frames = _card()["recipe"]["size"], _card()["recipe"]["frames"]
    assert video.shape == (frames, size, size, 3), video.shape


@pytest.fixture(scope="module")
def measured() -> dict:
    """The card's evaluation, run again: the same held-out clips through the main-job command."""
    card = json.loads((MINIATURE_DIR / "card.json").read_text())
    return evaluate(main_job_generator(MINIATURE_DIR), clips=card["metrics"]["clips"], size=card["recipe"]["size"],
                    round_trip=vae_round_trip(MINIATURE_DIR))


def test_the_card_states_what_the_shipped_model_does(measured):
    card = _card()
    for who, summary in (("model", measured["model"]), *measured["baselines"].items()):
        recorded = card["metrics"]["model"] if who == "model" else card["metrics"]["baselines"][who]
        for key, tolerance in REPRODUCED.items():
            assert summary[key] == pytest.approx(recorded[key], abs=tolerance), (who, key, summary[key], recorded[key])
    assert checks(measured) == card["checks"]


@pytest.mark.xfail(not _card().get("passes"), strict=True,
                   reason="issue #20: the shipped model does not meet the bars yet (card.json 'checks' says which)")
def test_the_shipped_model_meets_every_bar(measured):
    failed = [name for name, ok in checks(measured).items() if not ok]
    assert not failed, (failed, measured["model"], measured["baselines"]["vae"])


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


@pytest.mark.parametrize("workflow", ["toy_world_miniature", "long_video"])
def test_the_miniature_workflows_sample_with_the_cards_settings(workflow):
    """A user who opens the shipped workflow gets the sampling the card measured (steps, cfg, shift, size)."""
    card, nodes = _card(), json.loads((REPO / "workflows" / f"{workflow}.api.json").read_text()).values()
    expected = {**card["sampling"], "frames": card["recipe"]["frames"]}
    expected.pop("fourier_ratio", None)  # a Fourier Cutoff node input, not the sampler's
    samplers = [n["inputs"] for n in nodes if n["class_type"] in ("UniWorldSampler", "UniWorldExtendVideo")]
    assert samplers
    for inputs in samplers:
        shown = {k: inputs[k] for k in expected if k in inputs}
        assert shown == {k: expected[k] for k in shown} and {"steps", "cfg", "shift"} <= shown.keys(), inputs
    first = next(n["inputs"] for n in nodes if n["class_type"] == "UniWorldSampler")
    assert (first["width"], first["height"]) == (card["recipe"]["size"],) * 2
