"""A procedural toy world for training a miniature I2SV model end to end on the CPU.

Clips of simple shapes (circle, square, triangle; six colours; three sizes)
that slide, bounce or spin over one of four backgrounds, rendered as a plain
"photo" and in four styles that are real image transformations: watercolor
(soft washes, darkened edges, paper grain), pixel art (16x16 grid, 8-colour
palette), neon (glowing outlines on black) and pencil sketch (grey strokes on
paper). Captions name the objects, the motion with its direction and the
style. Everything is a pure function of the seed.

Motion has one speed per kind and the caption names its direction, so the first
frame, the caption and the style determine the whole clip: a small model learns
a function instead of averaging over directions it cannot know (which blurs
moving objects away).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

COLOURS = {"red": (0.9, 0.15, 0.1), "green": (0.15, 0.75, 0.2), "blue": (0.15, 0.3, 0.9),
           "yellow": (0.95, 0.85, 0.1), "purple": (0.6, 0.2, 0.8), "orange": (1.0, 0.55, 0.1)}
SHAPES = ("circle", "square", "triangle")
# Radius as a fraction of the frame. Run 11 drew them a third larger (0.09 / 0.13 / 0.18 before): at 64x64 a
# small object spanned about one 8x8 latent cell, and the VAE's round trip kept a third of the objects (#20).
SIZES = {"small": 0.12, "medium": 0.16, "large": 0.21}
MOTIONS = ("slides", "bounces", "spins")
# Directions per motion: (x, y) steps in frame widths per frame (y grows downwards), or radians per frame.
DIRECTIONS = {
    "slides": {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)},
    "bounces": {"up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1), "down-right": (1, 1)},
    "spins": {"clockwise": 1, "anticlockwise": -1},
}
SLIDE_SPEED, BOUNCE_SPEED, SPIN_SPEED = 0.02, 0.03, 0.2
BACKGROUNDS = ("sky", "grass", "sand", "night")
# The rendering's version, in the build's stage records: a build reuses a stage only when it was made from the same
# world (training.miniature). Raise it with any change to what the world draws. 2: run 11's larger objects, wider
# neon glow and broad pencil strokes over shading.
WORLD_VERSION = 2
STYLES = ("photo", "watercolor", "pixel art", "neon", "pencil sketch")


@dataclass(frozen=True)
class ToyObject:
    shape: str
    colour: str
    size: str
    motion: str
    direction: str
    start: tuple[float, float]  # centre, in 0..1
    velocity: tuple[float, float]  # per frame, in frame widths
    spin: float  # radians per frame


@dataclass(frozen=True)
class ToyClip:
    background: str
    objects: tuple[ToyObject, ...]
    seed: int

    def caption(self, style: str = "photo") -> str:
        parts = [f"a {o.size} {o.colour} {o.shape} {o.motion} {o.direction}" for o in self.objects]
        text = " and ".join(parts) + f" over {'the ' if self.background in ('sky', 'sand') else ''}{self.background}"
        return text if style == "photo" else f"{text}, {style} style"


def _random_object(rng: np.random.Generator) -> ToyObject:
    motion = str(rng.choice(MOTIONS))
    direction = str(rng.choice(list(DIRECTIONS[motion])))
    step = DIRECTIONS[motion][direction]
    shape = str(rng.choice(SHAPES if motion != "spins" else ("square", "triangle")))  # a spinning circle is still
    if motion == "slides":  # start where a 16-frame slide keeps the centre inside the middle of the frame
        start = tuple(float(rng.uniform(0.5, 0.7) if d < 0 else rng.uniform(0.3, 0.5) if d > 0 else
                            rng.uniform(0.3, 0.7)) for d in step)
    else:
        start = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7)))
    speed = SLIDE_SPEED if motion == "slides" else BOUNCE_SPEED
    return ToyObject(shape=shape, colour=str(rng.choice(list(COLOURS))), size=str(rng.choice(list(SIZES))),
                     motion=motion, direction=direction, start=start,
                     velocity=(0.0, 0.0) if motion == "spins" else (speed * step[0], speed * step[1]),
                     spin=SPIN_SPEED * step if motion == "spins" else 0.0)


def random_clip(seed: int) -> ToyClip:
    rng = np.random.default_rng(seed)
    objects = tuple(_random_object(rng) for _ in range(int(rng.integers(1, 3))))
    return ToyClip(str(rng.choice(BACKGROUNDS)), objects, seed)


def _background(name: str, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, size)[:, None, None]
    noise = torch.rand(size, size, 1, generator=gen)
    if name == "sky":
        return torch.tensor([0.45, 0.7, 1.0]) * (1 - 0.5 * y) + 0.5 * y
    if name == "grass":
        return torch.tensor([0.2, 0.55, 0.2]) + 0.08 * (noise - 0.5)
    if name == "sand":
        return torch.tensor([0.9, 0.78, 0.5]) - 0.15 * y + 0.05 * (noise - 0.5)
    stars = (noise > 0.985).float()
    return torch.tensor([0.05, 0.06, 0.2]) + stars * 0.9


def with_direction(obj: ToyObject, direction: str) -> ToyObject:
    """The same object moving another way of its motion (e.g. `slides left` -> `slides up`)."""
    step = DIRECTIONS[obj.motion][direction]
    if obj.motion == "spins":
        return replace(obj, direction=direction, spin=SPIN_SPEED * step)
    speed = SLIDE_SPEED if obj.motion == "slides" else BOUNCE_SPEED
    return replace(obj, direction=direction, velocity=(speed * step[0], speed * step[1]))


def position(obj: ToyObject, t: int) -> tuple[float, float]:
    """The object's centre at frame t, in 0..1 of the frame (x right, y down)."""
    x, y = obj.start[0] + obj.velocity[0] * t, obj.start[1] + obj.velocity[1] * t
    if obj.motion == "bounces":  # reflect off the borders, keeping the whole shape inside
        r = SIZES[obj.size]
        x, y = _reflect(x, r), _reflect(y, r)
    elif obj.motion == "slides":  # leaves one side and comes back on the other: the motion goes on (long clips)
        x, y = x % 1.0, y % 1.0
    return x, y


def _reflect(v: float, r: float) -> float:
    span = 1 - 2 * r
    u = (v - r) % (2 * span)
    return r + (u if u <= span else 2 * span - u)


def object_mask(obj: ToyObject, t: int, size: int) -> torch.Tensor:
    """Anti-aliased coverage [size, size] of an object at frame t (4x supersampled)."""
    s = size * 4
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    cx, cy = position(obj, t)
    angle = obj.spin * t
    dx, dy = xx - cx, yy - cy
    if obj.motion == "slides":  # the frame is a torus for sliding objects: draw the part past an edge opposite
        dx, dy = (dx + 0.5) % 1.0 - 0.5, (dy + 0.5) % 1.0 - 0.5
    rx, ry = dx * math.cos(angle) + dy * math.sin(angle), -dx * math.sin(angle) + dy * math.cos(angle)
    r = SIZES[obj.size]
    if obj.shape == "circle":
        inside = rx**2 + ry**2 <= r**2
    elif obj.shape == "square":
        inside = (rx.abs() <= r * 0.85) & (ry.abs() <= r * 0.85)
    else:  # triangle pointing up in its own frame
        inside = (ry <= r * 0.7) & (ry >= -r + 2 * rx.abs() * 1.0)
    return F.avg_pool2d(inside.float()[None, None], 4)[0, 0]


def render_photo(clip: ToyClip, frames: int = 17, size: int = 64) -> torch.Tensor:
    """The plain rendering: [T, H, W, 3] in 0..1."""
    base = _background(clip.background, size, clip.seed).expand(size, size, 3)  # the sky is one column
    video = []
    for t in range(frames):
        frame = base.clone()
        for obj in clip.objects:
            cover = object_mask(obj, t, size)[..., None]
            shade = torch.tensor(COLOURS[obj.colour])
            frame = frame * (1 - cover) + shade * cover
        video.append(frame.clamp(0, 1))
    return torch.stack(video)


def object_masks(clip: ToyClip, frames: int = 17, size: int = 64) -> torch.Tensor:
    """Each object's visible coverage [objects, T, H, W] in 0..1 (a later object covers an earlier one)."""
    masks = torch.stack([torch.stack([object_mask(o, t, size) for t in range(frames)]) for o in clip.objects])
    for k in range(len(clip.objects) - 1):  # drawn in order: what later objects cover is hidden
        masks[k] = masks[k] * (1 - masks[k + 1:]).prod(0)
    return masks


def render_background(clip: ToyClip, frames: int = 17, size: int = 64) -> torch.Tensor:
    """The clip with its objects left out: [T, H, W, 3] (stylize it with the clip's seed like the clip)."""
    return render_photo(replace(clip, objects=()), frames, size)


def _blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    k = 2 * radius + 1
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), k, stride=1)


def _edges(x: torch.Tensor) -> torch.Tensor:
    grey = x.mean(1, keepdim=True)
    gx = grey[..., :, 1:] - grey[..., :, :-1]
    gy = grey[..., 1:, :] - grey[..., :-1, :]
    return (F.pad(gx.abs(), (0, 1, 0, 0)) + F.pad(gy.abs(), (0, 0, 0, 1))).clamp(0, 1)


def stylize(video: torch.Tensor, style: str, seed: int = 0) -> torch.Tensor:
    """Apply a style to [T, H, W, 3] frames in 0..1."""
    if style == "photo":
        return video
    x = video.permute(0, 3, 1, 2)  # [T, 3, H, W]
    gen = torch.Generator().manual_seed(seed)
    paper = torch.rand(1, 1, *x.shape[2:], generator=gen)
    if style == "watercolor":
        soft = _blur(x, 2)
        washed = 0.75 * soft + 0.25 * soft.mean(1, keepdim=True) + 0.1
        out = washed * (1 - 0.6 * _edges(soft)) * (0.92 + 0.08 * paper)
    elif style == "pixel art":
        small = F.interpolate(x, size=(16, 16), mode="area")
        palette = small.round()  # each channel 0 or 1: an 8-colour palette
        out = F.interpolate(palette, size=x.shape[2:], mode="nearest")
    elif style == "neon":
        edges = _edges(_blur(x, 1)) * 6  # blurred first: outlines of shapes, not of background grain
        # A wide glow (run 11; radius 1 before): a 1-2 px outline was below what an 8x VAE keeps
        glow = _blur(edges, 2) * 1.6
        hue = x / x.amax(1, keepdim=True).clamp_min(1e-3)
        out = (glow.clamp(0, 1) * (0.4 + 0.6 * hue)) * 1.2
    elif style == "pencil sketch":
        # Broad strokes over a light tonal shading of the scene (run 11; thin strokes alone before, which a
        # VAE round trip lost almost entirely): darker things are drawn darker, as a pencil shades them
        strokes = 1 - 8 * _blur(_edges(_blur(x, 1)), 1)
        tone = 0.7 + 0.3 * x.mean(1, keepdim=True)
        tint = torch.tensor([0.97, 0.96, 0.92]).view(1, 3, 1, 1)
        out = (strokes * tone * (0.9 + 0.1 * paper)).expand(-1, 3, -1, -1) * tint
    else:
        raise ValueError(f"unknown toy style {style!r}; one of {STYLES}")
    return out.clamp(0, 1).permute(0, 2, 3, 1)


def write_dataset(folder: str | Path, clips: int, frames: int = 17, size: int = 64, seed: int = 0,
                  styles: tuple[str, ...] = STYLES) -> Path:
    """Frame folders plus a meta JSON (the official format) for `clips` clips x `styles`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(clips):
        clip = random_clip(seed * 1_000_003 + i)
        photo = render_photo(clip, frames, size)
        image = f"clip{i:05d}_condition.png"  # the photo's first frame conditions every styling (I2SV)
        Image.fromarray((photo[0] * 255).round().to(torch.uint8).numpy()).save(folder / image)
        for style in styles:
            name = f"clip{i:05d}_{style.replace(' ', '_')}"
            (folder / name).mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(stylize(photo, style, clip.seed)):
                pixels = (frame * 255).round().to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / name / f"{t:03d}.png")
            entries.append({"path": name, "cap": clip.caption(), "style": style, "fps": 16, "image": image})
    (folder / "meta.json").write_text(json.dumps(entries, indent=1))
    return folder / "meta.json"
