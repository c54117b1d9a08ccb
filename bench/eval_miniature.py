"""Evaluate a miniature I2SV model on held-out toy clips, independently of the training code.

Uses only the toy renderer (to make held-out inputs, references and a style
classifier) and the inference API. Metrics:

- first-frame fidelity: PSNR of generated frame 0 against the styled render of
  the input, next to the static-copy baseline (the unstyled input itself);
- motion: mean absolute frame-to-frame change, against a threshold set from
  real toy clips (half their median), and not a frozen video;
- style accuracy: a nearest-centroid classifier on colour/edge statistics,
  fitted on rendered clips, recognising the requested style;
- no conditional-image leakage: the share of later frames that differ from
  frame 0 by more than the threshold (1.0 = no frame is a copy of the first).

    python bench/eval_miniature.py WEIGHTS_DIR [--clips 20]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script
from training.toyworld import STYLES, random_clip, render_photo, stylize  # noqa: E402

HELD_OUT_SEED = 9_000_000  # far from the training seeds


def style_features(video: torch.Tensor) -> torch.Tensor:
    """Colour and edge statistics of [T, H, W, 3] frames in 0..1."""
    v = video.float()
    grey = v.mean(-1)
    saturation = (v.amax(-1) - v.amin(-1)).mean()
    edges = ((grey[:, :, 1:] - grey[:, :, :-1]).abs().mean() + (grey[:, 1:] - grey[:, :-1]).abs().mean())
    colours = len(torch.unique((v * 7).round().reshape(-1, 3), dim=0)) / 64
    blocky = (v[:, :, 1:] == v[:, :, :-1]).float().mean()
    return torch.stack([v.mean(), grey.std(), saturation, edges, torch.tensor(colours), blocky,
                        (v < 0.1).float().mean(), (v > 0.85).float().mean()])


class StyleClassifier:
    """Nearest centroid on standardised style features, fitted on toy renders."""

    def __init__(self, clips: int = 30, frames: int = 17, size: int = 64):
        rows, labels = [], []
        for i in range(clips):
            clip = random_clip(HELD_OUT_SEED + 10_000 + i)
            photo = render_photo(clip, frames, size)
            for s, style in enumerate(STYLES):
                rows.append(style_features(stylize(photo, style, clip.seed)))
                labels.append(s)
        x, y = torch.stack(rows), torch.tensor(labels)
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = (x - self.mean) / self.std
        self.centroids = torch.stack([z[y == s].mean(0) for s in range(len(STYLES))])

    def predict(self, video: torch.Tensor) -> str:
        z = (style_features(video) - self.mean) / self.std
        return STYLES[int((self.centroids - z).norm(dim=1).argmin())]


def motion(video: torch.Tensor) -> float:
    return float((video[1:] - video[:-1]).abs().mean())


def leakage_free_share(video: torch.Tensor, threshold: float) -> float:
    later = video[1:]
    return float(((later - video[0]).abs().mean(dim=(1, 2, 3)) > threshold).float().mean())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def motion_threshold(clips: int = 20, frames: int = 17, size: int = 64) -> float:
    """Half the median motion of real toy clips."""
    scores = sorted(motion(render_photo(random_clip(HELD_OUT_SEED + 20_000 + i), frames, size)) for i in range(clips))
    return scores[len(scores) // 2] / 2


def evaluate(generate_clip, clips: int = 20, frames: int = 17, size: int = 64) -> dict:
    """`generate_clip(first_frame [H, W, 3], caption, style) -> [T, H, W, 3]` over held-out clips."""
    classifier, threshold = StyleClassifier(frames=frames, size=size), motion_threshold(frames=frames, size=size)
    results = {"psnr": [], "baseline_psnr": [], "motion": [], "style_hits": [], "leakage_free": []}
    for i in range(clips):
        clip = random_clip(HELD_OUT_SEED + i)
        photo = render_photo(clip, frames, size)
        style = STYLES[1 + i % (len(STYLES) - 1)]  # the four real styles, in turn
        target = stylize(photo, style, clip.seed)
        video = generate_clip(photo[0], clip.caption(style), style)
        results["psnr"].append(psnr(video[0], target[0]))
        results["baseline_psnr"].append(psnr(photo[0], target[0]))
        results["motion"].append(motion(video))
        results["style_hits"].append(float(classifier.predict(video) == style))
        results["leakage_free"].append(leakage_free_share(video, threshold))
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    return {"first_frame_psnr": mean["psnr"], "static_copy_psnr": mean["baseline_psnr"],
            "motion": mean["motion"], "motion_threshold": threshold, "style_accuracy": mean["style_hits"],
            "leakage_free_share": mean["leakage_free"], "clips": clips}


def miniature_generator(weights: Path, steps: int = 30, seed: int = 0):
    """A `generate_clip` function running the miniature model files through the inference API."""
    from uniworld_core.checkpoints import load
    from uniworld_core.conditioning import Conditioner
    from uniworld_core.pipeline import VideoSettings, generate
    from uniworld_core.sampler import SamplerSettings
    from uniworld_core.vlm import VLMEncoder, load_adapter, load_vlm

    dit, vae = load(weights / "toy_dit.safetensors", "dit").model, load(weights / "toy_vae.safetensors", "vae").model
    model, processor = load_vlm(weights / "toy_vlm", torch.float32)
    adapter = load_adapter(weights / "toy_adapter.safetensors", model.config.text_config.hidden_size)
    conditioner = Conditioner(VLMEncoder(model, processor, adapter, max_length=128, image_size=(56, 56)))

    def generate_clip(first_frame, caption, style):
        positive, negative = conditioner.encode(first_frame, caption, negative_prompt="")
        size = first_frame.shape[0]
        video = VideoSettings(width=size, height=size, num_frames=17, seed=seed)
        return generate(dit, vae, first_frame, positive, negative, video, SamplerSettings(steps=steps))

    return generate_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(json.dumps(evaluate(miniature_generator(args.weights, args.steps), args.clips), indent=2))


if __name__ == "__main__":
    main()
