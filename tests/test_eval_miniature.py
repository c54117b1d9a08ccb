"""The miniature model's evaluation measures what it claims, checked on ground-truth toy clips."""

from __future__ import annotations

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from eval_miniature import HELD_OUT_SEED, StyleClassifier, evaluate, leakage_free_share, motion, motion_threshold  # noqa: E402

from training.toyworld import STYLES, random_clip, render_photo, stylize  # noqa: E402


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


def test_perfect_and_static_generators_score_as_expected():
    """A generator returning the true styled clip beats the static copy; a frozen one fails motion."""
    def truth(first_frame, caption, style):
        seeds = (HELD_OUT_SEED + i for i in range(4))
        clip = next(c for c in map(random_clip, seeds) if c.caption() == caption)
        return stylize(render_photo(clip), style, clip.seed)

    def static(first_frame, caption, style):
        return first_frame[None].expand(17, -1, -1, -1)

    good, bad = evaluate(truth, clips=4), evaluate(static, clips=4)
    assert good["first_frame_psnr"] > good["static_copy_psnr"] and good["style_accuracy"] >= 0.75
    assert good["motion"] > good["motion_threshold"] > bad["motion"] and bad["leakage_free_share"] == 0
