"""Sampling caches on the miniature model: forwards saved, wall time, and what they cost in quality.

For held-out toy clips (bench/miniature_metrics.py) at the card's steps and at 50,
each cache setting of a sweep is run beside the uncached sampler from the same
seed, in the same process, alternating which goes first:

- forwards: the DiT branch forwards the cached run made, and uncached / cached;
- wall: uncached / cached time of the sampling loop (`generate_latents`), and of
  the whole clip (conditioning excluded, the VAE decode included); medians over clips;
- PSNR (all frames) and SSIM (mean over frames) of the cached clip against the
  uncached one;
- the object score (pooled over the clips) of the uncached and the cached clips.

    python bench/bench_cache.py [--weights DIR] [--clips 4] [--steps 30,50] [--plot PNG] [--json OUT]

The plot (speed against PSNR, one curve per policy and step count) needs
matplotlib (`pip install -e ".[bench]"`); without it the tables are still printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_miniature import held_out  # noqa: E402
from miniature_metrics import Truth, object_errors, psnr, ssim  # noqa: E402

from uniworld_core import SamplerSettings, StyleSpec, VideoSettings, decode_frames, generate_latents  # noqa: E402
from uniworld_core.presets import load_miniature, miniature  # noqa: E402
from uniworld_core.sampling import CacheSettings, CacheStats  # noqa: E402

SWEEP = {
    "adaptive": ["adaptive:0.05", "adaptive:0.1", "adaptive:0.2", "adaptive:0.3", "adaptive:0.5", "adaptive:0.8"],
    "wan": ["wan:2:2", "wan:2:3", "wan:3:4", "wan:3:6:0.1:0.1", "wan:4:8:0.1:0.1", "wan"],
    "adaptive+wan": ["adaptive+wan"],
}


@dataclass
class Run:
    """One clip sampled by one setting: its frames, its forwards and its times."""

    frames: torch.Tensor
    forwards: int
    sampling_s: float
    clip_s: float


@dataclass
class Row:
    """A setting at a step count, over the clips."""

    spec: str
    steps: int
    forwards: list[int] = field(default_factory=list)
    uncached_forwards: list[int] = field(default_factory=list)
    sampling_ratio: list[float] = field(default_factory=list)
    clip_ratio: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    errors: list[tuple[float, float, float]] = field(default_factory=list)  # cached, uncached, absent

    def summary(self) -> dict:
        cached, uncached, absent = (sum(e[i] for e in self.errors) for i in range(3))
        return {"spec": self.spec, "steps": self.steps, "forwards": sum(self.forwards),
                "forward_ratio": sum(self.uncached_forwards) / max(1, sum(self.forwards)),
                "sampling_wall_ratio": statistics.median(self.sampling_ratio),
                "clip_wall_ratio": statistics.median(self.clip_ratio),
                "psnr_db": statistics.mean(self.psnr), "psnr_min_db": min(self.psnr),
                "ssim": statistics.mean(self.ssim),
                "object_score": 1 - cached / absent, "object_score_uncached": 1 - uncached / absent}


def _run(model, inputs, video: VideoSettings, sampler: SamplerSettings) -> Run:
    stats = CacheStats()
    started = time.perf_counter()
    latents = generate_latents(model.dit, model.vae, inputs["image"], inputs["context"], inputs["negative"], video,
                               sampler, stats=stats)
    sampled = time.perf_counter()
    frames = decode_frames(model.vae, latents)
    # without a cache the sampler counts nothing: every step runs each guidance branch once
    forwards = stats.forwards if sampler.cache.active else sampler.steps * (1 if sampler.guidance_scale == 1 else 2)
    return Run(frames, forwards, sampled - started, time.perf_counter() - started)


def _clip_inputs(model, clips: int, size: int, frames: int) -> list[dict]:
    """Truth and conditioning of each held-out clip (encoded once: the cache does not touch it)."""
    found = []
    for clip, style in held_out(clips):
        truth = Truth.of(clip, style, frames, size)
        image = truth.photo[0]
        context, negative = model.conditioner.encode(image, clip.caption(), StyleSpec(model.styles()[style]))
        found.append({"truth": truth, "image": image, "context": context, "negative": negative})
    return found


def measure(model, inputs: list[dict], steps: int, specs: list[str], base: SamplerSettings,
            video: VideoSettings, log=print) -> list[dict]:
    """Every spec at `steps` against the uncached sampler, clip by clip, alternating the order."""
    rows = {spec: Row(spec, steps) for spec in specs}
    plain = replace(base, steps=steps, cache=CacheSettings())
    _run(model, inputs[0], video, plain)  # warm-up: first runs pay one-off costs
    for n, clip in enumerate(inputs):
        for k, spec in enumerate(specs):
            cached_settings = replace(plain, cache=CacheSettings.parse(spec).with_schedule(
                model.folder / miniature.FILES["dit"]))  # plain `wan`: the calibrated schedule
            order = [plain, cached_settings] if (n + k) % 2 == 0 else [cached_settings, plain]
            runs = {id(s): _run(model, clip, video, s) for s in order}
            off, on = runs[id(plain)], runs[id(cached_settings)]
            row = rows[spec]
            row.forwards.append(on.forwards)
            row.uncached_forwards.append(off.forwards)
            row.sampling_ratio.append(off.sampling_s / on.sampling_s)
            row.clip_ratio.append(off.clip_s / on.clip_s)
            row.psnr.append(psnr(on.frames, off.frames))
            row.ssim.append(statistics.mean(ssim(a, b) for a, b in zip(on.frames, off.frames)))
            cached_error, absent = object_errors(on.frames, clip["truth"])
            row.errors.append((float(cached_error.sum()), float(object_errors(off.frames, clip["truth"])[0].sum()),
                               float(absent.sum())))
        log(f"{steps} steps: clip {n + 1}/{len(inputs)} done")
    return [row.summary() for row in rows.values()]


def table(results: list[dict]) -> list[str]:
    """A markdown table of the summaries."""
    lines = ["| steps | setting | forwards | fewer forwards | sampling wall | clip wall | PSNR dB (min) | SSIM | "
             "object score: cached | uncached |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['steps']} | `{r['spec']}` | {r['forwards']} | {r['forward_ratio']:.2f}x | "
                     f"{r['sampling_wall_ratio']:.2f}x | {r['clip_wall_ratio']:.2f}x | {r['psnr_db']:.1f} "
                     f"({r['psnr_min_db']:.1f}) | {r['ssim']:.3f} | {r['object_score']:.3f} | "
                     f"{r['object_score_uncached']:.3f} |")
    return lines


def plot(results: list[dict], path: Path) -> bool:
    """Sampling speed-up against PSNR, a curve per policy and step count; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for policy, specs in SWEEP.items():
        for steps in sorted({r["steps"] for r in results}):
            points = sorted((r for r in results if r["spec"] in specs and r["steps"] == steps),
                            key=lambda r: r["psnr_db"])
            if points:  # a threshold sweep is a curve; schedules are points
                axes.plot([r["psnr_db"] for r in points], [r["sampling_wall_ratio"] for r in points],
                          "o-" if policy == "adaptive" else "s", label=f"{policy}, {steps} steps")
    axes.axhline(1.0, color="grey", lw=0.8)
    axes.set_xlabel("PSNR against the uncached clip (dB)")
    axes.set_ylabel("sampling speed-up (uncached / cached wall time)")
    axes.set_title("Sampling caches on the miniature model")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="the miniature model folder (default: the shipped one)")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--steps", default=None, help="comma-separated step counts (default: the card's and 50)")
    parser.add_argument("--specs", default=None, help="comma-separated cache settings (default: the sweep)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--plot", help="write the trade-off plot here (PNG)")
    parser.add_argument("--json", help="write the summaries here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    card = miniature.defaults(args.weights)
    model = load_miniature(args.weights)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else sorted({card.steps, 50})
    specs = args.specs.split(",") if args.specs else [s for group in SWEEP.values() for s in group]
    video = VideoSettings(card.width, card.height, card.frames, card.seed, card.fps)
    base = SamplerSettings(card.steps, card.shift, card.cfg, card.fourier_ratio)
    inputs = _clip_inputs(model, args.clips, card.width, card.frames)
    print(f"miniature: {card.width}x{card.height}, {card.frames} frames, shift {card.shift:g}, cfg {card.cfg:g}; "
          f"{args.clips} held-out clips; torch threads {torch.get_num_threads()}")
    results = [r for n in steps for r in measure(model, inputs, n, specs, base, video)]
    print("\n".join(table(results)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.plot and plot(results, Path(args.plot)):
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
