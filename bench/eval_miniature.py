"""Evaluate a miniature I2SV model on held-out toy clips, independently of the training code.

Every video comes from the main-job command (`python -m uniworld_core generate`,
run in-process with the build's folder as the miniature model), so the numbers
are what a user gets, WEBP included. Each metric (bench/miniature_metrics.py:
object score, centroid error, motion direction, frame-0 PSNR/SSIM, style
accuracy, motion, leakage) is computed for the model and for baselines made
from the truth:

- flat: every frame replaced by its mean colour (the target's own);
- absent: the styled clip without its objects (object score 0 by definition);
- static: the unstyled input photo, frozen (the old card's baseline);
- vae: the target through the build's VAE and back (the ceiling this VAE allows);
- truth: the target itself (what the estimators give when nothing is wrong).

    python bench/eval_miniature.py WEIGHTS_DIR [--clips 20] [--card] [--sheets]

`--card` writes the metrics, the baselines and the pass bars into card.json and
card.md; `--sheets` writes a sample sheet per style (input photo, target,
generated; every 4th frame; 6 held-out clips) into WEIGHTS_DIR/sheets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))
from miniature_metrics import (  # noqa: E402
    HELD_OUT_SEED,
    StyleClassifier,
    Truth,
    centroid_errors,
    direction_right,
    leakage_free_share,
    motion,
    motion_threshold,
    object_errors,
    psnr,
    ssim,
)

from training.toyworld import STYLES, WORLD_VERSION, random_clip  # noqa: E402

SHEET_CLIPS, SHEET_EVERY = 6, 4


def clip_metrics(video: torch.Tensor, truth: Truth, classifier: StyleClassifier, threshold: float) -> dict:
    """Every metric of one generated (or baseline) clip against its truth."""
    video = video.float()
    error, absent = object_errors(video, truth)
    centroids, direction = centroid_errors(video, truth), direction_right(video, truth)
    return {"object_error": error.tolist(), "absent_error": absent.tolist(),
            "centroid_error": float(centroids.mean()) if len(centroids) else None,
            "direction_right": None if direction is None else float(direction),
            "first_frame_psnr": psnr(video[0], truth.target[0]), "first_frame_ssim": ssim(video[0], truth.target[0]),
            "style_hit": float(classifier.predict(video) == truth.style),
            "motion": motion(video), "leakage_free": leakage_free_share(video, threshold)}


def baselines(truth: Truth, round_trip=None) -> dict[str, torch.Tensor]:
    """The baseline clips for one truth (see the module docstring)."""
    flat = truth.target.mean(dim=(1, 2), keepdim=True).expand_as(truth.target)
    found = {"flat": flat, "absent": truth.absent, "static": truth.photo[:1].expand_as(truth.photo),
             "truth": truth.target}
    if round_trip is not None:
        found["vae"] = round_trip(truth.target)
    return found


def _mean(values) -> float:
    """The mean of the defined values (a clip whose style hides its objects has none for some metrics)."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def summarise(rows: list[dict]) -> dict:
    """Means over clips; the object score pooled over clips (and frames); the median of the clips' centroid errors.

    Pooled, a clip whose objects barely differ from their background (a small dark shape
    at night) weighs as little as its error, instead of swinging a mean of ratios.
    """
    error, absent = (torch.tensor([r[key] for r in rows]).sum(0) for key in ("object_error", "absent_error"))
    mean = lambda key: _mean(r[key] for r in rows)  # noqa: E731
    return {"object_score": float(1 - error.sum() / absent.sum()),
            "object_score_frames": (1 - error / absent.clamp_min(1e-8)).tolist(),
            "centroid_error_px": statistics.median(r["centroid_error"] for r in rows
                                                   if r["centroid_error"] is not None),
            "direction_accuracy": mean("direction_right"), "first_frame_psnr": mean("first_frame_psnr"),
            "first_frame_ssim": mean("first_frame_ssim"), "style_accuracy": mean("style_hit"),
            "motion": mean("motion"), "leakage_free_share": mean("leakage_free")}


def held_out(clips: int) -> list[tuple]:
    """(clip, style) pairs of the evaluation: the four real styles in turn."""
    return [(random_clip(HELD_OUT_SEED + i), STYLES[1 + i % (len(STYLES) - 1)]) for i in range(clips)]


def evaluate(generate_clip, clips: int = 20, frames: int = 17, size: int = 64, round_trip=None) -> dict:
    """`generate_clip(first_frame [H, W, 3], caption, style) -> [T, H, W, 3]` over held-out clips.

    The caption names objects and motion; the style is passed on its own (as a user picks it).
    `round_trip(video) -> video` (the build's VAE) adds the `vae` baseline.
    Returns {"model": summary, "baselines": {name: summary}, "clips", "size", "motion_threshold"}.
    """
    classifier, threshold = StyleClassifier(frames=frames, size=size), motion_threshold(frames=frames, size=size)
    rows: dict[str, list[dict]] = {}
    for clip, style in held_out(clips):
        truth = Truth.of(clip, style, frames, size)
        videos = {"model": generate_clip(truth.photo[0], clip.caption(), style), **baselines(truth, round_trip)}
        for name, video in videos.items():
            rows.setdefault(name, []).append(clip_metrics(video, truth, classifier, threshold))
    summary = {name: summarise(r) for name, r in rows.items()}
    return {"model": summary.pop("model"), "baselines": summary, "clips": clips, "size": size,
            "motion_threshold": threshold}


def _write_png(frame: torch.Tensor, path: Path) -> None:
    Image.fromarray((frame.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(path)


def main_job_generator(weights: Path, steps: int | None = None, seed: int | None = None):
    """A `generate_clip` that runs `python -m uniworld_core generate` in-process on the build in `weights`.

    The build's card gives the sampling settings (as for any user); the clip comes back from the WEBP file.
    """
    from uniworld_core import read_webp
    from uniworld_core.__main__ import main

    folder = Path(tempfile.mkdtemp(prefix="eval_miniature_"))
    counter = iter(range(10**9))

    def generate_clip(first_frame, caption, style):
        n = next(counter)
        image, out = folder / f"in{n}.png", folder / f"out{n}.webp"
        _write_png(first_frame, image)
        extra = [*(["--steps", str(steps)] if steps else []), *(["--seed", str(seed)] if seed is not None else [])]
        previous = os.environ.get("UNIWORLD_MINIATURE_DIR")
        os.environ["UNIWORLD_MINIATURE_DIR"] = str(weights)
        try:
            code = main(["generate", "--image", str(image), "--prompt", caption, "--style", style, "--out", str(out),
                         *extra])
        finally:
            os.environ.pop("UNIWORLD_MINIATURE_DIR") if previous is None else os.environ.update(
                UNIWORLD_MINIATURE_DIR=previous)
        if code:
            raise RuntimeError(f"the main-job command failed ({code}) for {caption!r}, {style}")
        return read_webp(out)

    return generate_clip


def vae_round_trip(weights: Path):
    """`video [T, H, W, 3] -> video` through the build's VAE and a WEBP file (the model's path to the user)."""
    import uniworld_core as uw

    vae = uw.load(weights / "toy_vae.safetensors", "vae").model.eval()
    folder = Path(tempfile.mkdtemp(prefix="eval_vae_"))

    def round_trip(video: torch.Tensor) -> torch.Tensor:
        pixels = video.permute(3, 0, 1, 2)[None] * 2 - 1
        frames = uw.decode_frames(vae, vae.encode(pixels))
        return uw.read_webp(uw.save_webp(frames, folder / "clip.webp"))

    return round_trip


# The card's pass bars (issue #20), each relative to a baseline where one applies; px bars scale with the frame.
BARS = {"vae_object_score": 0.80, "object_score": 0.60, "object_score_of_vae": 0.75, "psnr_below_vae_db": 1.5,
        "psnr_above_flat_db": 4.0, "centroid_error_px_at_64": 4.0, "direction_accuracy": 0.80,
        "style_accuracy": 0.90, "leakage_free_share": 0.90}


def checks(metrics: dict) -> dict[str, bool]:
    """Each pass bar, met or not (those against the VAE need the `vae` baseline)."""
    model, base = metrics["model"], metrics["baselines"]
    found = {
        "object score >= bar": model["object_score"] >= BARS["object_score"],
        "first-frame PSNR >= flat frame + bar": (model["first_frame_psnr"]
                                                 >= base["flat"]["first_frame_psnr"] + BARS["psnr_above_flat_db"]),
        "median centroid error <= bar": (model["centroid_error_px"]
                                         <= BARS["centroid_error_px_at_64"] * metrics["size"] / 64),
        "motion direction right >= bar": model["direction_accuracy"] >= BARS["direction_accuracy"],
        "style accuracy >= bar": model["style_accuracy"] >= BARS["style_accuracy"],
        "moves more than the threshold": model["motion"] > metrics["motion_threshold"],
        "later frames are not copies of frame 0": model["leakage_free_share"] >= BARS["leakage_free_share"]}
    if "vae" in base:
        vae = base["vae"]
        found.update({
            "VAE round-trip object score >= bar": vae["object_score"] >= BARS["vae_object_score"],
            "object score >= bar x VAE round trip's": model["object_score"] >= BARS["object_score_of_vae"] * vae[
                "object_score"],
            "first-frame PSNR >= VAE round trip - bar": (model["first_frame_psnr"]
                                                         >= vae["first_frame_psnr"] - BARS["psnr_below_vae_db"])})
    return found


def passes(metrics: dict) -> bool:
    """All the card's bars met."""
    return all(checks(metrics).values())


ROWS = [("object score (clip)", "object_score", "{:.3f}"), ("object score (frame 0)", None, "{:.3f}"),
        ("median centroid error (px)", "centroid_error_px", "{:.2f}"),
        ("motion direction right", "direction_accuracy", "{:.2f}"),
        ("frame-0 PSNR (dB)", "first_frame_psnr", "{:.2f}"), ("frame-0 SSIM", "first_frame_ssim", "{:.3f}"),
        ("style accuracy", "style_accuracy", "{:.2f}"), ("motion (mean frame change)", "motion", "{:.4f}"),
        ("leakage-free share", "leakage_free_share", "{:.2f}")]


def table(metrics: dict) -> list[str]:
    """Markdown: every metric for the model and each baseline."""
    columns = {"model": metrics["model"], **metrics["baselines"]}
    lines = ["| metric | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, key, form in ROWS:
        values = [s["object_score_frames"][0] if key is None else s[key] for s in columns.values()]
        lines.append(f"| {label} | " + " | ".join(form.format(v) for v in values) + " |")
    return lines


def write_card(weights: Path, metrics: dict, command: str) -> None:
    """Add the metrics, baselines and bars to card.json and render card.md from it."""
    card = json.loads((weights / "card.json").read_text())
    card.update(metrics=metrics, bars=BARS, checks=checks(metrics), passes=passes(metrics), eval_command=command)
    card.pop("thresholds", None)  # the old card's bars
    (weights / "card.json").write_text(json.dumps(card, indent=2))
    recipe, dit = card["recipe"], card["recipe"]["dit"]
    sheets = sorted(p.name for p in (weights / "sheets").glob("*.png")) if (weights / "sheets").is_dir() else []
    lines = ["# Miniature Uniworld-OSP2.0 (toy world)", "",
             "Trained end to end on the CPU by `python -m training.miniature --out DIR` (this package only).", "",
             "## Data", f"{recipe['clips']} procedural toy clips ({recipe['frames']} frames, {recipe['size']}x"
             f"{recipe['size']}; toy world version {card.get('toy_world', 1)}), each rendered as photo, watercolor, "
             "pixel art, neon and pencil sketch; the photo's first frame conditions every rendering (I2SV).", "",
             "## Model", f"- VAE: Wan2.1 architecture, width {recipe['vae_width']}, stages "
             f"{recipe.get('vae_dim_mult', [1, 2, 4, 4])}, {recipe.get('vae_image_steps', 0)} image + "
             f"{recipe['vae_steps']} clip steps on the first {recipe.get('vae_clips', recipe['clips'])} clips"
             + (f", decoder trained on latents + N(0, {recipe['vae_latent_noise']}^2)"
                if recipe.get("vae_latent_noise") else ""),
             f"- DiT: FlashI2V, dim {dit['dim']}, {dit['num_layers']} layers, {dit['num_heads']} heads, patch "
             f"{dit['patch_size']}, {recipe['dit_steps']} steps, batch {recipe['batch_size']} "
             f"(loss {card['dit_loss_first_last_100'][0]:.3f} -> {card['dit_loss_first_last_100'][1]:.3f})"
             + (f", the objects' latent cells weighted {1 + recipe['object_weight']:g}x in the loss"
                if recipe.get("object_weight") else ""),
             *([f"- Continuation stage (long videos): {recipe['long_steps']} more steps on {recipe['long_clips']} "
                f"clips of {recipe['long_frames']} frames, in windows of {recipe['context_frames']} context + "
                f"{recipe['new_frames']} new latent frames, {recipe['long_continuation']:.0%} of them continuations "
                f"starting mid-clip"] if recipe.get("long_steps") else []),
             f"- Condition: tiny Qwen2.5-VL (hidden {recipe['vlm_hidden']}, frozen, tokenizer trained on the "
             "captions) + adapter trained with the DiT", f"- {card['bytes'] / 2**20:.1f} MiB in all, "
             f"{card['minutes']} min to train on 2 CPU cores",
             f"- Sampling defaults: {card.get('sampling', {})}", "",
             f"## Metrics ({metrics['clips']} held-out clips through the main-job command, `{command}`)", "",
             "Baselines: flat = each frame's mean colour, absent = the styled clip without its objects, static = "
             "the input photo frozen, vae = the target through this VAE (the ceiling), truth = the target.", "",
             *table(metrics), "", "| bar | met |", "|---|---|",
             *(f"| {name} | {'yes' if ok else 'NO'} |" for name, ok in checks(metrics).items()), "",
             f"Bars: {json.dumps(BARS)}", "", f"Passes: {'yes' if passes(metrics) else 'NO'}", "",
             *(["## Sample sheets (input photo | target | generated, every 4th frame)", "",
                *(f"![{name}](sheets/{name})" for name in sheets), ""] if sheets else [])]
    (weights / "card.md").write_text("\n".join(lines) + "\n")


def sample_sheets(generate_clip, out: Path, clips: int = SHEET_CLIPS, frames: int = 17, size: int = 64) -> list[Path]:
    """One PNG per style: per held-out clip a row of input photo, target frames, generated frames."""
    out.mkdir(parents=True, exist_ok=True)
    gap, written = 4, []
    shown = list(range(0, frames, SHEET_EVERY))
    width = size * (1 + 2 * len(shown)) + 2 * gap
    for style in STYLES[1:]:
        sheet = torch.ones(clips * (size + gap) - gap, width, 3)
        for row, (clip, _) in enumerate(held_out(clips)):
            truth = Truth.of(clip, style, frames, size)
            video = generate_clip(truth.photo[0], clip.caption(), style).float()
            tiles = [truth.photo[0], *truth.target[shown], *video[shown]]
            top = row * (size + gap)
            for i, tile in enumerate(tiles):
                left = i * size + gap * (i > 0) + gap * (i > len(shown))
                sheet[top:top + size, left:left + size] = tile
        path = out / f"{style.replace(' ', '_')}.png"
        image = Image.fromarray((sheet * 255).round().to(torch.uint8).numpy())
        image.resize((image.width * 2, image.height * 2), Image.NEAREST).save(path, optimize=True)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--steps", type=int, help="sampling steps (default: the card's)")
    parser.add_argument("--card", action="store_true", help="write the metrics into WEIGHTS/card.json and card.md")
    parser.add_argument("--sheets", action="store_true", help="write WEIGHTS/sheets/<style>.png")
    args = parser.parse_args()
    card = json.loads((args.weights / "card.json").read_text())
    size = card["recipe"]["size"]
    world = card.get("toy_world", 1)  # cards from before the world had a version: 1
    if world != WORLD_VERSION:  # measured on clips of a world the model never saw
        print(f"warning: these weights were trained on toy world version {world}; this evaluation renders "
              f"version {WORLD_VERSION} (rebuild them, or check out the matching commit)")
    generator = main_job_generator(args.weights, args.steps)
    if args.sheets:
        sample_sheets(generator, args.weights / "sheets", size=size)
    metrics = evaluate(generator, args.clips, size=size, round_trip=vae_round_trip(args.weights))
    print("\n".join(table(metrics)))
    print(json.dumps({**checks(metrics), "passes": passes(metrics)}, indent=1))
    if args.card:
        steps = f" --steps {args.steps}" if args.steps else ""
        write_card(args.weights, metrics, f"python bench/eval_miniature.py WEIGHTS --clips {args.clips}{steps}")


if __name__ == "__main__":
    main()
