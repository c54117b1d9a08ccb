"""What the miniature model's evaluation measures, on toy clips whose objects and positions are known.

Independent of the training code: it uses only the toy world (the renderer, its
object masks and motions) to know what a held-out clip should show.

- object score: 1 - absolute error inside the objects' footprints (masks grown by
  2 px at 64x64) / the same error of the object-absent clip (the styled
  background alone). 1 = the objects are right, 0 = no better than leaving them
  out, below 0 = worse than that. Per frame and over the clip (the evaluation
  pools the errors over clips). Absolute, not squared: a squared error gives a
  blurred blob most of the credit of a crisp shape;
- tracking: each generated object's centroid (of where the clip differs from the
  styled background, within the part of the frame nearest that object) against
  the centroid of its true mask, in pixels; direction: the generated clip is
  closer to the captioned motion than to every other direction of that motion
  (left/right/up/down, the four diagonals, clockwise/anticlockwise);
- frame 0: PSNR and SSIM against the styled target;
- style: a linear discriminant on colour/edge statistics, fitted on toy renders
  (clean and blurred/noisy copies), recognising the requested style;
- motion and leakage: mean frame change against half that of real clips, and the
  share of later frames that are not copies of frame 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from training.toyworld import (
    DIRECTIONS,
    STYLES,
    ToyClip,
    object_masks,
    random_clip,
    render_background,
    render_photo,
    stylize,
    with_direction,
)

HELD_OUT_SEED = 9_000_000  # far from the training seeds


def _grey_gradient(grey: torch.Tensor) -> torch.Tensor:
    return (grey[:, :, 1:] - grey[:, :, :-1]).abs().mean() + (grey[:, 1:] - grey[:, :-1]).abs().mean()


def _blur(video: torch.Tensor, radius: int = 1) -> torch.Tensor:
    x, k = video.permute(0, 3, 1, 2), 2 * radius + 1
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), k, stride=1).permute(0, 2, 3, 1)


def style_features(video: torch.Tensor) -> torch.Tensor:
    """Colour and edge statistics of [T, H, W, 3] frames in 0..1.

    Chosen to survive a decoder's blur: brightness and darkness, saturation
    (overall and of lit pixels), the tint of near-grey bright pixels (paper),
    palette purity (channels at 0 or 1), fine-versus-coarse edges, and edges on
    4-pixel block boundaries versus inside blocks.
    """
    v = video.float()
    grey, sat = v.mean(-1), v.amax(-1) - v.amin(-1)
    paper = (grey > 0.7) & (sat < 0.15)
    lit = grey > 0.15
    gx = (grey[:, :, 1:] - grey[:, :, :-1]).abs()
    on_boundary = torch.arange(gx.shape[2]) % 4 == 3
    blockiness = gx[:, :, on_boundary].mean() / gx[:, :, ~on_boundary].mean().clamp_min(1e-4)
    fine = _grey_gradient(grey) / _grey_gradient(_blur(v).mean(-1)).clamp_min(1e-4)
    pure = (v < 0.12) | (v > 0.88)
    return torch.stack([
        grey.mean(), grey.std(), (grey < 0.15).float().mean(), (grey > 0.8).float().mean(),
        sat.mean(), (sat > 0.5).float().mean(), (sat * lit).sum() / lit.sum().clamp_min(1), lit.float().mean(),
        ((v[..., 0] - v[..., 2]) * paper).sum() / paper.sum().clamp_min(1), (v[..., 0] - v[..., 2]).mean(),
        torch.minimum(v, 1 - v).mean(), pure.float().mean(), pure.all(-1).float().mean(),
        (v.amin(-1) > 0.95).float().mean(),
        _grey_gradient(grey), fine.clamp_min(1e-3).log(), blockiness.clamp(1e-3, 1e3).log()])


def degrade(video: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A rendering as a decoder might return it: blurred or down/up-sampled, noisy, slightly off in colour."""
    kind = int(torch.randint(0, 4, (1,), generator=generator))
    if kind == 1:
        video = _blur(video)
    elif kind >= 2:
        factor = 2 if kind == 2 else 4
        x = F.avg_pool2d(video.permute(0, 3, 1, 2), factor)
        video = F.interpolate(x, scale_factor=factor, mode="bilinear").permute(0, 2, 3, 1)
    noise = 0.03 * torch.randn(video.shape, generator=generator) + 0.03 * torch.randn(3, generator=generator)
    return (video + noise).clamp(0, 1)


class StyleClassifier:
    """Linear discriminant (shared covariance) on standardised style features, fitted on toy renders.

    Each render is seen clean and as `variants` degraded copies, so the classifier
    keys on what survives decoding rather than on pixel-exact details.
    """

    def __init__(self, clips: int = 30, frames: int = 17, size: int = 64, variants: int = 2):
        rows, labels = [], []
        generator = torch.Generator().manual_seed(0)
        for i in range(clips):
            clip = random_clip(HELD_OUT_SEED + 10_000 + i)
            photo = render_photo(clip, frames, size)
            for s, style in enumerate(STYLES):
                video = stylize(photo, style, clip.seed)
                for variant in range(variants + 1):
                    rows.append(style_features(video if variant == 0 else degrade(video, generator)))
                    labels.append(s)
        x, y = torch.stack(rows), torch.tensor(labels)
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - self.mean) / self.std
        self.centroids = torch.stack([z[y == s].mean(0) for s in range(len(STYLES))])
        spread = torch.cat([z[y == s] - self.centroids[s] for s in range(len(STYLES))])
        covariance = spread.T @ spread / len(z) + 1e-3 * torch.eye(z.shape[1])
        self.precision = torch.linalg.inv(covariance)

    def predict(self, video: torch.Tensor) -> str:
        """The style whose centroid is nearest (Mahalanobis) to the clip's features."""
        offset = self.centroids - (style_features(video) - self.mean) / self.std
        return STYLES[int(((offset @ self.precision) * offset).sum(1).argmin())]


def motion(video: torch.Tensor) -> float:
    """Mean absolute frame-to-frame change."""
    return float((video[1:] - video[:-1]).abs().mean())


def leakage_free_share(video: torch.Tensor, threshold: float) -> float:
    """Share of later frames that differ from frame 0 by more than `threshold` (not copies of it)."""
    later = video[1:]
    return float(((later - video[0]).abs().mean(dim=(1, 2, 3)) > threshold).float().mean())


def motion_threshold(clips: int = 20, frames: int = 17, size: int = 64) -> float:
    """Half the median motion of real toy clips."""
    scores = sorted(motion(render_photo(random_clip(HELD_OUT_SEED + 20_000 + i), frames, size)) for i in range(clips))
    return scores[len(scores) // 2] / 2


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in 0..1."""
    mse = float((a.float() - b.float()).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Structural similarity of two [H, W, 3] images in 0..1 (Gaussian window 11, sigma 1.5; channel mean)."""
    coords = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-coords**2 / (2 * 1.5**2))
    window = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 11, 11)
    x, y = (v.float().permute(2, 0, 1)[None] for v in (a, b))
    mean = lambda v: F.conv2d(v, window, groups=3)  # noqa: E731
    mx, my = mean(x), mean(y)
    vx, vy, cov = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float(((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


VISIBLE = 1e-4  # mean squared difference an object makes to its footprint; below it, the style hides it


def _grow(masks: torch.Tensor) -> torch.Tensor:
    """[N, H, W] masks grown by 2 px at 64x64 (outline styles draw around the edge)."""
    grow = max(1, round(2 * masks.shape[-1] / 64))
    return F.max_pool2d(masks[:, None], 2 * grow + 1, stride=1, padding=grow)[:, 0]


@dataclass
class Truth:
    """What a held-out clip should show: the photo, its styled target and background, the objects' masks."""

    clip: ToyClip
    style: str
    photo: torch.Tensor  # [T, H, W, 3], the unstyled rendering (frame 0 is the input)
    target: torch.Tensor  # the styled clip
    absent: torch.Tensor  # the styled clip without its objects
    masks: torch.Tensor  # [objects, T, H, W] visible coverage

    @classmethod
    def of(cls, clip: ToyClip, style: str, frames: int = 17, size: int = 64) -> Truth:
        """Render the clip, its styled target and background, and its objects' masks."""
        photo = render_photo(clip, frames, size)
        return cls(clip, style, photo, stylize(photo, style, clip.seed),
                   stylize(render_background(clip, frames, size), style, clip.seed), object_masks(clip, frames, size))

    def footprint(self) -> torch.Tensor:
        """[T, H, W]: where any object is, grown by 2 px at 64x64."""
        return _grow(self.masks.amax(0))

    def visible(self) -> torch.Tensor:
        """[objects, T] booleans: the object shows in this style (a yellow circle on sand is lost to pixel art)."""
        difference = (self.target - self.absent).pow(2).mean(-1)
        grown = torch.stack([_grow(m) for m in self.masks])
        return (difference * grown).sum(dim=(2, 3)) > VISIBLE * grown.sum(dim=(2, 3)).clamp_min(1)

    def styled(self, clip: ToyClip) -> torch.Tensor:
        """Another version of the clip (e.g. an object moving another way), rendered in this style."""
        return stylize(render_photo(clip, *self.target.shape[:2]), self.style, clip.seed)


def object_errors(video: torch.Tensor, truth: Truth) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: absolute error inside the objects' footprint of the video and of the object-absent clip.

    Frames where the style hides every object are left out (both errors 0), as the score is undefined there.
    """
    region = truth.footprint()[..., None] * truth.visible().any(0)[:, None, None, None]
    error = lambda v: ((v.float() - truth.target).abs() * region).sum(dim=(1, 2, 3))  # noqa: E731
    return error(video), error(truth.absent)


def _wrapped(d: torch.Tensor, period: float) -> torch.Tensor:
    """Differences on a circle of `period` pixels: the shorter way round."""
    return (d + period / 2) % period - period / 2


def _cells(centres: torch.Tensor, height: int, width: int, wrap: bool) -> torch.Tensor:
    """[objects, H, W] booleans: the pixels nearest each centre ([objects, 2] as x, y); on a torus if `wrap`."""
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    dx, dy = xx[None] - centres[:, 0, None, None], yy[None] - centres[:, 1, None, None]
    if wrap:
        dx, dy = _wrapped(dx, width), _wrapped(dy, height)
    distance = dx**2 + dy**2
    return distance == distance.amin(0, keepdim=True)


def _centroid(weights: torch.Tensor, wrap: bool = False) -> torch.Tensor:
    """(x, y) in pixels of a [H, W] weight map (pixel centres at +0.5).

    With `wrap` the frame is a torus (sliding objects leave one side and come back on the other): each
    coordinate is a circular mean, so an object split across an edge has its centre on that edge.
    """
    yy, xx = torch.meshgrid(*(torch.arange(n) + 0.5 for n in weights.shape), indexing="ij")
    total = weights.sum().clamp_min(1e-8)
    if not wrap:
        return torch.stack([(weights * xx).sum() / total, (weights * yy).sum() / total])
    found = []
    for coords, period in ((xx, weights.shape[1]), (yy, weights.shape[0])):
        angle = coords * (2 * math.pi / period)
        mean = torch.atan2((weights * angle.sin()).sum(), (weights * angle.cos()).sum())
        found.append(mean % (2 * math.pi) * period / (2 * math.pi))
    return torch.stack(found)


def centroid_errors(video: torch.Tensor, truth: Truth) -> torch.Tensor:
    """Distances in pixels between each generated object's centroid and its true one, over visible objects.

    The generated object is where the video differs from the styled background
    (above the median difference of its cell, so a background that is slightly off
    does not count); its cell is the part of the frame nearest its true centre.
    In clips with a sliding object, positions and distances are taken on the torus the
    toy world's slides move on.
    """
    objects, frames = truth.masks.shape[:2]
    height, width = video.shape[1:3]
    wrap = any(o.motion == "slides" for o in truth.clip.objects)
    visible, errors = truth.visible(), []
    for t in range(frames):
        true = torch.stack([_centroid(truth.masks[k, t], wrap) for k in range(objects)])
        cells = _cells(true, height, width, wrap)
        difference = (video[t].float() - truth.absent[t]).abs().mean(-1)
        for k in range(objects):
            if not visible[k, t]:
                continue
            weights = (difference - difference[cells[k]].median()).clamp_min(0) * cells[k]
            found = _centroid(weights, wrap) if weights.sum() > 1e-6 else _centroid(cells[k].float(), wrap)
            offset = found - true[k]
            if wrap:
                offset = torch.stack([_wrapped(offset[0], width), _wrapped(offset[1], height)])
            errors.append(offset.norm())
    return torch.stack(errors) if errors else torch.zeros(0)


def direction_right(video: torch.Tensor, truth: Truth) -> bool | None:
    """Whether, object by object, the clip is closer to the captioned direction than to every other one.

    Objects the style hides and directions it makes indistinguishable from the true one are not
    counted; None if nothing is left to judge.
    """
    def distance(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a[1:].float() - b[1:]).pow(2).sum())

    own, compared, shown = distance(video, truth.target), 0, truth.visible().any(1)
    for k, obj in enumerate(truth.clip.objects):
        for other in DIRECTIONS[obj.motion]:
            if other == obj.direction or not shown[k]:
                continue
            objects = tuple(with_direction(o, other) if j == k else o for j, o in enumerate(truth.clip.objects))
            alternative = truth.styled(replace(truth.clip, objects=objects))
            if distance(alternative, truth.target) < VISIBLE * truth.target[1:].numel():
                continue
            compared += 1
            if distance(video, alternative) <= own:
                return False
    return True if compared else None
