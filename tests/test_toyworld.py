"""The procedural toy world: deterministic, moving, five distinct renderings, readable by training."""

from __future__ import annotations

import torch

from training.data import ClipDataset, read_meta
from training.toyworld import (
    COLOURS,
    SLIDE_SPEED,
    STYLES,
    ToyClip,
    ToyObject,
    object_masks,
    position,
    random_clip,
    render_background,
    render_photo,
    stylize,
    with_direction,
    write_dataset,
)


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


def _centroid(mask: torch.Tensor) -> torch.Tensor:
    yy, xx = torch.meshgrid(*(torch.arange(n) + 0.5 for n in mask.shape), indexing="ij")
    return torch.stack([(mask * xx).sum(), (mask * yy).sum()]) / mask.sum()


def test_masks_and_background_are_what_the_photo_is_made_of():
    clip = next(c for c in map(random_clip, range(100)) if len(c.objects) == 2)
    photo, background, masks = render_photo(clip), render_background(clip), object_masks(clip)
    assert masks.shape == (2, 17, 64, 64) and bool((masks.sum(dim=(2, 3)) > 0).all())
    outside = masks.sum(0) == 0
    assert torch.equal(photo[outside], background[outside])
    for k, obj in enumerate(clip.objects):  # fully covered pixels show the object's own colour
        solid = masks[k] > 0.999
        if solid.any():
            assert torch.allclose(photo[solid], torch.tensor(COLOURS[obj.colour]).expand(int(solid.sum()), 3))


def test_a_slide_moves_the_mask_by_its_speed_and_another_direction_goes_another_way():
    obj = ToyObject("circle", "red", "medium", "slides", "right", (0.4, 0.5), (SLIDE_SPEED, 0.0), 0.0)
    clip = ToyClip("grass", (obj,), seed=1)
    shift = _centroid(object_masks(clip)[0, 10]) - _centroid(object_masks(clip)[0, 0])
    assert torch.allclose(shift, torch.tensor([10 * SLIDE_SPEED * 64, 0.0]), atol=0.05)
    up = ToyClip("grass", (with_direction(obj, "up"),), seed=1)
    shift = _centroid(object_masks(up)[0, 10]) - _centroid(object_masks(up)[0, 0])
    assert torch.allclose(shift, torch.tensor([0.0, -10 * SLIDE_SPEED * 64]), atol=0.05)
    assert position(with_direction(obj, "left"), 5)[0] < position(obj, 0)[0] < position(obj, 5)[0]


def test_sliding_goes_on_past_the_edge_for_long_clips():
    """A slide leaves one side and comes back on the other, whole: 4x the run length still shows it moving."""
    obj = ToyObject("square", "red", "medium", "slides", "right", (0.8, 0.5), (SLIDE_SPEED, 0.0), 0.0)
    masks = object_masks(ToyClip("grass", (obj,), seed=1), frames=65)[0]
    areas = masks.sum(dim=(1, 2))
    assert torch.allclose(areas, areas[0].expand(65), rtol=0.02)  # never cut off by the edge
    across = 10  # x = 0.8 + 0.2 = 1.0: split over the right and left edges
    assert masks[across, :, :4].sum() > 0 and masks[across, :, -4:].sum() > 0
    assert abs(position(obj, 50)[0] - (0.8 + 50 * SLIDE_SPEED) % 1) < 1e-6
