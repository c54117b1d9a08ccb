"""The miniature model's evaluation measures what it claims, checked on toy clips whose truth is known."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from eval_miniature import evaluate, held_out, passes  # noqa: E402
from miniature_fit import relative_errors  # noqa: E402
from miniature_metrics import (  # noqa: E402
    StyleClassifier,
    Truth,
    centroid_errors,
    direction_right,
    leakage_free_share,
    motion,
    motion_threshold,
    object_errors,
)

from training.toyworld import COLOURS, STYLES, ToyClip, ToyObject, random_clip, render_photo, stylize  # noqa: E402


def test_style_classifier_recognises_rendered_styles():
    classifier = StyleClassifier(clips=12)
    hits = total = 0
    for i in range(10):
        clip = random_clip(123_456 + i)
        photo = render_photo(clip)
        for style in STYLES:
            hits += classifier.predict(stylize(photo, style, clip.seed)) == style
            total += 1
    assert hits / total >= 0.8, f"accuracy {hits / total:.2f}"


def test_motion_and_leakage_tell_real_clips_from_frozen_ones():
    threshold = motion_threshold(clips=8)
    moving = render_photo(random_clip(4242))
    frozen = moving[:1].expand_as(moving).clone()
    assert motion(moving) > threshold > motion(frozen)
    assert leakage_free_share(moving, threshold) > 0.5 and leakage_free_share(frozen, threshold) == 0


def _square(start, motion="slides", direction="right", colour="red", velocity=(0.02, 0.0)):
    return ToyObject("square", colour, "large", motion, direction, start, velocity, 0.0)


def test_centroid_error_is_the_displacement_of_the_objects():
    """A clip whose square is drawn 5 px to the side of where it should be is 5 px off, the true clip ~0."""
    clip = ToyClip("grass", (_square((0.4, 0.5)),), seed=3)
    truth = Truth.of(clip, "watercolor")
    moved = truth.styled(replace(clip, objects=(_square((0.4 + 5 / 64, 0.5)),)))
    assert float(centroid_errors(truth.target, truth).max()) < 0.5
    assert abs(float(centroid_errors(moved, truth).median()) - 5) < 1.0


def test_direction_tells_the_captioned_way_from_the_others():
    clip = ToyClip("sky", (_square((0.5, 0.5)),), seed=4)
    truth = Truth.of(clip, "neon")
    left = truth.styled(replace(clip, objects=(_square((0.5, 0.5), direction="left", velocity=(-0.02, 0.0)),)))
    assert direction_right(truth.target, truth) is True
    assert direction_right(left, truth) is False
    assert direction_right(truth.target[:1].expand_as(truth.target), truth) is False  # frozen: not right


def test_object_score_errors_and_hidden_objects():
    clip = ToyClip("sky", (_square((0.5, 0.5)),), seed=5)
    truth = Truth.of(clip, "pencil sketch")
    error, absent = object_errors(truth.target, truth)
    assert float(error.sum()) == 0 and bool((absent > 0).all())
    assert torch.equal(object_errors(truth.absent, truth)[0], absent)
    # a yellow square on sand: pixel art's 8-colour palette draws both as (1, 1, 0), so nothing can be judged
    hidden = Truth.of(ToyClip("sand", (_square((0.5, 0.5), colour="yellow"),), seed=6), "pixel art")
    assert COLOURS["yellow"][2] < 0.5 and not hidden.visible().any()
    assert float(object_errors(hidden.target, hidden)[1].sum()) == 0 and direction_right(hidden.target, hidden) is None


def test_perfect_static_and_absent_generators_score_as_expected():
    """The true styled clip scores 1 and passes; a frozen photo and the empty background fail."""
    clips = {clip.caption(): clip for clip, _ in held_out(4)}

    def truth(first_frame, caption, style):
        return Truth.of(clips[caption], style).target

    def static(first_frame, caption, style):
        return first_frame[None].expand(17, -1, -1, -1)

    def absent(first_frame, caption, style):
        return Truth.of(clips[caption], style).absent

    good, bad, empty = (evaluate(g, clips=4) for g in (truth, static, absent))
    assert good["model"]["object_score"] == 1 and good["model"]["centroid_error_px"] < 1
    assert good["model"]["direction_accuracy"] == 1 and good["model"]["style_accuracy"] >= 0.75
    assert good["model"]["first_frame_psnr"] > good["baselines"]["flat"]["first_frame_psnr"] + 4
    assert bad["model"]["object_score"] < 0 and bad["model"]["motion"] < bad["motion_threshold"]
    assert abs(empty["model"]["object_score"]) < 1e-6 and not passes(empty) and not passes(bad)


def test_centroid_error_of_a_slide_across_the_edge_is_measured_round_the_frame():
    """A square split over the right and left edges: the true clip ~0 px off, one drawn 5 px further ~5 px."""
    clip = ToyClip("grass", (_square((0.98, 0.5)),), seed=3)
    truth = Truth.of(clip, "watercolor")
    moved = truth.styled(replace(clip, objects=(_square((0.98 + 5 / 64, 0.5)),)))
    assert float(centroid_errors(truth.target, truth).max()) < 0.5
    assert abs(float(centroid_errors(moved, truth).median()) - 5) < 1.0


class _Oracle(torch.nn.Module):
    """A DiT stand-in whose velocity makes the clean estimate `target` (or, with `known` false, the batch mean)."""

    def __init__(self, target: torch.Tensor, start: torch.Tensor, known: bool = True):
        super().__init__()
        self.start = start
        self.target = target if known else target.mean(0, keepdim=True).expand_as(target)

    def project_start(self, start: torch.Tensor) -> torch.Tensor:
        return 0.5 * start

    def forward(self, x_t, t, context, features):
        sigma = (t / 1000).view(-1, 1, 1, 1, 1)
        return (x_t + self.project_start(self.start) - self.target) / sigma


def test_fit_diagnostic_is_zero_for_a_perfect_dit_and_about_one_for_the_mean():
    gen = torch.Generator().manual_seed(0)
    clips = {"latents": torch.randn(16, 16, 3, 4, 4, generator=gen),
             "loss_mask": (torch.rand(16, 1, 3, 4, 4, generator=gen) > 0.7).float()}
    start = torch.randn(16, 16, 1, 4, 4, generator=gen)
    for known, low, high in ((True, 0.0, 1e-9), (False, 0.8, 1.2)):
        oracle = _Oracle(clips["latents"], start, known)
        found = relative_errors(oracle, clips, torch.zeros(16, 2, 8), start, 0.8, torch.Generator().manual_seed(1))
        assert set(found) == {"all", "frame 0", "later", "objects", "background"}
        assert all(low <= v <= high for v in found.values()), (known, found)


@pytest.mark.parametrize("latent_channels", [16, 4])
def test_held_out_cache_holds_unseen_photos_encoded_by_the_builds_own_vae(tmp_path, latent_channels):
    """`miniature_fit.py --held-out`: clips of photos the build never saw, in the training cache's layout (for a
    build of any latent width: the recipe is read back from its card, DiT included)."""
    from miniature_fit import held_out_cache
    from safetensors.torch import load_file

    from training.miniature import QUICK, build

    z = latent_channels
    build(tmp_path, replace(QUICK, vae_z_dim=z, dit=replace(QUICK.dit, in_dim=z, out_dim=z)), log=lambda *a: None)
    cache = held_out_cache(tmp_path, 1)
    trained = load_file(str(sorted((tmp_path / "cache").glob("clip_*.safetensors"))[0]))
    held = sorted(cache.glob("clip_*.safetensors"))
    assert len(held) == len(STYLES)  # one photo, every rendering
    unseen = load_file(str(held[0]))
    assert unseen.keys() == trained.keys() and unseen["latents"].shape == trained["latents"].shape
    assert not torch.equal(unseen["latents"], trained["latents"])
    assert 0 < unseen["loss_mask"].mean() < 1  # its own objects' cells, from its own seeds
    assert held_out_cache(tmp_path, 1) == cache and len(list(cache.glob("clip_*.safetensors"))) == len(held)
