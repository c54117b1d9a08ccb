"""Evaluate a miniature I2SV model on held-out toy clips, independently of the training code.

Uses only the toy renderer (to make held-out inputs, references and a style
classifier) and the inference API. Metrics:

- first-frame fidelity: PSNR of generated frame 0 against the styled render of
  the input, next to the static-copy baseline (the unstyled input itself);
- motion: mean absolute frame-to-frame change, against a threshold set from
  real toy clips (half their median), and not a frozen video;
- style accuracy: a linear discriminant on colour/edge statistics, fitted on
  rendered clips (clean and blurred/noisy copies), recognising the requested style;
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script
from training.toyworld import STYLES, random_clip, render_photo, stylize  # noqa: E402

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
        offset = self.centroids - (style_features(video) - self.mean) / self.std
        return STYLES[int(((offset @ self.precision) * offset).sum(1).argmin())]


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
    """`generate_clip(first_frame [H, W, 3], caption, style) -> [T, H, W, 3]` over held-out clips.

    The caption names objects and motion; the style is passed on its own (as a user picks it)."""
    classifier, threshold = StyleClassifier(frames=frames, size=size), motion_threshold(frames=frames, size=size)
    results = {"psnr": [], "baseline_psnr": [], "motion": [], "style_hits": [], "leakage_free": []}
    for i in range(clips):
        clip = random_clip(HELD_OUT_SEED + i)
        photo = render_photo(clip, frames, size)
        style = STYLES[1 + i % (len(STYLES) - 1)]  # the four real styles, in turn
        target = stylize(photo, style, clip.seed)
        video = generate_clip(photo[0], clip.caption(), style)
        results["psnr"].append(psnr(video[0], target[0]))
        results["baseline_psnr"].append(psnr(photo[0], target[0]))
        results["motion"].append(motion(video))
        results["style_hits"].append(float(classifier.predict(video) == style))
        results["leakage_free"].append(leakage_free_share(video, threshold))
    mean = {k: sum(v) / len(v) for k, v in results.items()}
    return {"first_frame_psnr": mean["psnr"], "static_copy_psnr": mean["baseline_psnr"],
            "motion": mean["motion"], "motion_threshold": threshold, "style_accuracy": mean["style_hits"],
            "leakage_free_share": mean["leakage_free"], "clips": clips}


def miniature_generator(weights: Path, steps: int | None = None, seed: int = 0):
    """A `generate_clip` function running the miniature model files through the inference API.

    Samples with the build's own settings (shift, cfg and steps from its card), as the CLI does."""
    from uniworld_core.conditioning import StyleSpec
    from uniworld_core.presets import load_miniature, miniature
    from uniworld_core.sampling import SamplerSettings, VideoSettings, generate

    model = load_miniature(weights)
    styles = model.styles()
    sampling = miniature.defaults(weights)
    settings = SamplerSettings(steps=steps or sampling.steps, shift=sampling.shift, guidance_scale=sampling.cfg)

    def generate_clip(first_frame, caption, style):
        positive, negative = model.conditioner.encode(first_frame, caption, StyleSpec(styles[style]),
                                                      negative_prompt="")
        size = first_frame.shape[0]
        video = VideoSettings(width=size, height=size, num_frames=17, seed=seed)
        return generate(model.dit, model.vae, first_frame, positive, negative, video, settings)

    return generate_clip


# What the card promises (the bar); tests/test_shipped_miniature.py holds the shipped model to it.
THRESHOLDS = {"psnr_margin_db": 0.0, "style_accuracy": 0.8, "leakage_free_share": 0.9}


def passes(metrics: dict) -> bool:
    return (metrics["first_frame_psnr"] > metrics["static_copy_psnr"] + THRESHOLDS["psnr_margin_db"]
            and metrics["motion"] > metrics["motion_threshold"]
            and metrics["style_accuracy"] >= THRESHOLDS["style_accuracy"]
            and metrics["leakage_free_share"] >= THRESHOLDS["leakage_free_share"])


def write_card(weights: Path, metrics: dict, command: str) -> None:
    """Add the metrics to card.json and render card.md from it."""
    card = json.loads((weights / "card.json").read_text())
    card.update(metrics=metrics, thresholds=THRESHOLDS, passes=passes(metrics), eval_command=command)
    (weights / "card.json").write_text(json.dumps(card, indent=2))
    recipe, dit = card["recipe"], card["recipe"]["dit"]
    rows = [("first-frame PSNR (dB)", metrics["first_frame_psnr"], f"> static copy {metrics['static_copy_psnr']:.2f}"),
            ("motion (mean frame change)", metrics["motion"],
             f"> {metrics['motion_threshold']:.4f} (half of real clips)"),
            ("style accuracy", metrics["style_accuracy"], f">= {THRESHOLDS['style_accuracy']}"),
            ("leakage-free share of later frames", metrics["leakage_free_share"],
             f">= {THRESHOLDS['leakage_free_share']}")]
    lines = ["# Miniature Uniworld-OSP2.0 (toy world)", "",
             "Trained end to end on the CPU by `python -m training.miniature --out DIR` (this package only).", "",
             "## Data", f"{recipe['clips']} procedural toy clips ({recipe['frames']} frames, {recipe['size']}x"
             f"{recipe['size']}), each rendered as photo, watercolor, pixel art, neon and pencil sketch; "
             "the photo's first frame conditions every rendering (I2SV).", "",
             "## Model", f"- VAE: Wan2.1 architecture, width {recipe['vae_width']}, "
             f"{recipe.get('vae_image_steps', 0)} image + {recipe['vae_steps']} clip steps "
             f"(held-out L1 first/later frames: {', '.join(f'{v:.3f}' for v in card['vae_held_out_l1_first_later'])})",
             f"- DiT: FlashI2V, dim {dit['dim']}, {dit['num_layers']} layers, {dit['num_heads']} heads, "
             f"{recipe['dit_steps']} steps, batch {recipe['batch_size']} (loss {card['dit_loss_first_last_100'][0]:.3f}"
             f" -> {card['dit_loss_first_last_100'][1]:.3f})",
             f"- Condition: tiny Qwen2.5-VL (hidden {recipe['vlm_hidden']}, frozen, tokenizer trained on the "
             "captions) + adapter trained with the DiT", f"- {card['bytes'] / 2**20:.1f} MiB in all, "
             f"{card['minutes']} min to train on 2 CPU cores",
             f"- Sampling defaults: {card.get('sampling', {})}", "",
             f"## Metrics ({metrics['clips']} held-out clips, `{command}`)", "",
             "| metric | value | threshold |", "|---|---|---|",
             *(f"| {name} | {value:.4f} | {limit} |" for name, value, limit in rows), "",
             f"Passes: {'yes' if passes(metrics) else 'NO'}", "",
             "What the metrics do not say (sample grids, where it falls short): docs/training.md, "
             "\"The built-in miniature model\"."]
    (weights / "card.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--steps", type=int, help="sampling steps (default: the card's)")
    parser.add_argument("--card", action="store_true", help="write the metrics into WEIGHTS/card.json and card.md")
    args = parser.parse_args()
    metrics = evaluate(miniature_generator(args.weights, args.steps), args.clips)
    steps = f" --steps {args.steps}" if args.steps else ""
    print(json.dumps({**metrics, "passes": passes(metrics)}, indent=2))
    if args.card:
        write_card(args.weights, metrics, f"python bench/eval_miniature.py WEIGHTS --clips {args.clips}{steps}")


if __name__ == "__main__":
    main()
