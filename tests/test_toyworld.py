"""The procedural toy world: deterministic, moving, five distinct renderings, readable by training."""

from __future__ import annotations

import torch

from training.data import ClipDataset, read_meta
from training.toyworld import STYLES, random_clip, render_photo, stylize, write_dataset


def test_clips_are_a_function_of_the_seed():
    a, b = random_clip(7), random_clip(7)
    assert a == b and torch.equal(render_photo(a), render_photo(b))
    assert random_clip(8) != a


def test_objects_move():
    for seed in range(6):
        video = render_photo(random_clip(seed), frames=17)
        assert (video[-1] - video[0]).abs().mean() > 0.002, f"clip {seed} is frozen"
        assert (video[1:] - video[:-1]).abs().mean() > 0.0005


def test_styles_are_real_transformations():
    photo = render_photo(random_clip(3), frames=5)
    out = {s: stylize(photo, s, 3) for s in STYLES}
    colours = lambda v: len(torch.unique((v * 255).round().reshape(-1, 3), dim=0))  # noqa: E731
    saturation = lambda v: (v.amax(-1) - v.amin(-1)).mean()  # noqa: E731
    assert colours(out["pixel art"]) <= 8 < colours(out["photo"])
    assert out["neon"].mean() < 0.25 < out["photo"].mean()  # mostly black
    assert saturation(out["pencil sketch"]) < 0.1 < saturation(out["photo"])
    # soft washes: the sharpest edges (not the mean change, which the paper grain raises on a flat sky)
    sharpest = lambda v: (v[:, 1:] - v[:, :-1]).abs().amax(-1).flatten().quantile(0.999)  # noqa: E731
    assert sharpest(out["watercolor"]) < 0.5 * sharpest(out["photo"])
    for a in STYLES:
        for b in STYLES:
            if a < b:
                assert (out[a] - out[b]).abs().mean() > 0.03, (a, b)


def test_captions_name_objects_motion_and_style():
    clip = random_clip(11)
    text = clip.caption("watercolor")
    assert all(o.shape in text and o.colour in text and o.motion in text for o in clip.objects)
    assert text.endswith("watercolor style") and "style" not in clip.caption()


def test_dataset_feeds_the_training_pipeline(tmp_path):
    meta = write_dataset(tmp_path, clips=2, frames=9, size=32, styles=("photo", "neon"))
    entries, skipped = read_meta(meta)
    assert len(entries) == 4 and not skipped
    dataset = ClipDataset(entries, num_frames=9, train_fps=16, buckets=((32, 32),))
    items = [dataset[i] for i in range(4)]
    assert all(i is not None and i["video"].shape == (3, 9, 32, 32) for i in items)
    assert {i["style"] for i in items} == {"photo", "neon"}
