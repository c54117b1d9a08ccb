"""Long videos measured on held-out toy clips 4x a run's length: continuation, the fallback, naive chaining.

    python bench/bench_long_video.py [--weights uniworld_core/miniature_model] [--clips 20] [--chunks N] [--card]

Next to them, trivial clips made from the truth (a flat frame of each frame's mean colour, the
object-absent clip, the first target frame held still, the truth itself) are measured the same way.
For each held-out clip the miniature model makes a video of one run plus continuations (at least 4 times
the run's length in all), in three ways: continuation (the model's context frames), the fallback
(chained image-to-video with colour matching and a cross-fade) and naive chaining (the same chain
without either). Per chunk: the object score (pooled over the clips, as bench/eval_miniature.py pools
it) and the object tracking error (the toy world knows where its objects are), the colour drift (the
mean colour of the background against the first chunk's), and time and peak memory; per join: the frame
change across it over the mean frame change within the chunks. Prints a markdown table per way and
writes the numbers as JSON next to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script

from bench.miniature_metrics import Truth, centroid_errors, object_errors  # noqa: E402
from uniworld_core import ContinuationSettings, SamplerSettings, StyleSpec, VideoSettings, encode_start  # noqa: E402
from uniworld_core.presets import load_miniature, miniature  # noqa: E402
from uniworld_core.sampling import generate_long  # noqa: E402

WAYS = {"continuation": dict(fallback=False), "fallback": dict(fallback=True),
        "naive chaining": dict(fallback=True, match=False, crossfade=0)}
# Trivial clips measured the same way (no model): what each number is worth
BASELINES = {"flat frame": lambda t: t.target.mean(dim=(1, 2), keepdim=True).expand_as(t.target),
             "object-absent": lambda t: t.absent, "static copy": lambda t: t.target[:1].expand_as(t.target),
             "truth": lambda t: t.target}


PROC = Path("/proc/self")  # per-chunk peaks need Linux: VmHWM, reset by writing 5 to clear_refs


def return_freed_memory() -> None:
    """Have glibc give every freed block of 64 KiB or more back to the OS (mmap), as tests/test_vae_memory does.

    Otherwise freed tensors stay in malloc's heap, counted in RSS, and a chunk's peak depends on how the heap
    happens to be fragmented: 674-806 MiB from chunk to chunk in one run, 505-508 MiB with this.
    """
    import ctypes
    import ctypes.util

    M_MMAP_THRESHOLD = -3
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallopt") or not libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024):
        print("note: not glibc; peak RSS includes memory malloc keeps after freeing")


def reset_peak_rss() -> None:
    """Start a new peak-RSS measurement."""
    (PROC / "clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """The peak resident memory since `reset_peak_rss`."""
    status = (PROC / "status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def chunk_metrics(video: torch.Tensor, truth: Truth, bounds: list[tuple[int, int]]) -> list[dict]:
    """Per chunk of one generated video: its object and object-absent errors (summed, for pooling over
    clips), its mean tracking error and its background colour's drift from the first chunk's."""
    error, absent = object_errors(video, truth)
    background = (1 - truth.footprint())[..., None]
    first_colour = None
    rows = []
    for start, stop in bounds:
        part = slice(start, stop)
        colour = (video[part] * background[part]).sum(dim=(0, 1, 2)) / background[part].sum().clamp_min(1)
        first_colour = colour if first_colour is None else first_colour
        sub = replace(truth, photo=truth.photo[part], target=truth.target[part], absent=truth.absent[part],
                      masks=truth.masks[:, part])
        centroids = centroid_errors(video[part], sub)
        rows.append({"object_error": float(error[part].sum()), "absent_error": float(absent[part].sum()),
                     "centroid_error_px": float(centroids.mean()) if len(centroids) else None,
                     "colour_drift_255": float((colour - first_colour).abs().max() * 255)})
    return rows


def summarise_chunks(rows: list[list[dict]], chunks: int) -> dict:
    """Per chunk over the clips, as bench/eval_miniature.py summarises a clip: the object score pooled
    (1 - the clips' summed object error / their summed object-absent error; a clip whose objects barely
    differ from their background weighs as little as its error instead of swinging a mean of ratios; None
    where the style hides every object), the median of the clips' tracking errors, the mean colour drift."""
    out = {"object_score": [], "centroid_error_px": [], "colour_drift_255": []}
    for c in range(chunks):
        error, absent = (sum(r[c][key] for r in rows) for key in ("object_error", "absent_error"))
        centroids = [r[c]["centroid_error_px"] for r in rows if r[c]["centroid_error_px"] is not None]
        out["object_score"].append(1 - error / absent if absent > 0 else None)
        out["centroid_error_px"].append(statistics.median(centroids) if centroids else None)
        out["colour_drift_255"].append(_mean(r[c]["colour_drift_255"] for r in rows))
    return out


def join_discontinuity(video: torch.Tensor, bounds: list[tuple[int, int]]) -> list[float]:
    """The frame change across each join over the mean frame change inside the chunks."""
    change = (video[1:] - video[:-1]).abs().mean(dim=(1, 2, 3))
    joins = [start - 1 for start, _ in bounds[1:]]
    inside = torch.ones_like(change, dtype=torch.bool)
    inside[joins] = False
    return [float(change[j] / change[inside].mean().clamp_min(1e-8)) for j in joins]


def run_way(model, truth: Truth, settings: ContinuationSettings, sampler: SamplerSettings, frames: int,
            size: int) -> tuple[torch.Tensor, list[dict]]:
    """The long video of one way, with the time and memory of each chunk."""
    image = truth.photo[0]
    positive, negative = model.conditioner.encode(image, truth.clip.caption(), StyleSpec(model.styles()[truth.style]))
    start = encode_start(model.vae, image, size, size, sampler.fourier_ratio)
    video = VideoSettings(width=size, height=size, num_frames=frames, seed=truth.clip.seed % 1000)
    reset_peak_rss()
    chunks, costs, started = [], [], time.perf_counter()
    for chunk in generate_long(model.dit, model.vae, start, positive, negative, video, sampler, settings):
        chunks.append(chunk)
        costs.append({"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()})
        reset_peak_rss()
        started = time.perf_counter()
    return torch.cat(chunks), costs


def card_section(results: dict, frames: int, clips: int) -> dict:
    """The card's `long_video` entry: the ways, the baselines (no time or memory) and issue #23's bars."""
    cont, ways = results.get("continuation"), {k: v for k, v in results.items() if k in WAYS}
    baselines = {k: {m: v[m] for m in ("object_score", "centroid_error_px", "colour_drift_255", "join_discontinuity")}
                 for k, v in results.items() if k in BASELINES}
    bars = {}
    if cont and len(cont["object_score"]) >= 4:
        first, fourth = cont["object_score"][0], cont["object_score"][3]
        flat = [max(v[1:]) <= 1.1 * min(v[1:]) for v in (cont["seconds_per_chunk"], cont["peak_rss_mib"])]
        bars = {"4th chunk object score >= 0.8x the first's": bool(first and first > 0 and fourth is not None
                                                                       and fourth >= 0.8 * first),
                "join discontinuity <= 1.5": cont["join_discontinuity"] <= 1.5,
                "colour drift <= 3/255 over 4 chunks": max(cont["colour_drift_255"][:4]) <= 3,
                "time and memory per chunk flat within 10% from chunk 2": all(flat)}
    if "fallback" in results and "naive chaining" in results:
        fallback, naive = results["fallback"], results["naive chaining"]
        bars["fallback beats naive chaining on drift and joins"] = (
            fallback["colour_drift_255"][-1] < naive["colour_drift_255"][-1]
            and fallback["join_discontinuity"] < naive["join_discontinuity"])
    return {"command": f"OMP_NUM_THREADS=1 python bench/bench_long_video.py --clips {clips} --card", "frames": frames,
            "clips": clips, "results": ways, "bars_met": bars, "baselines": baselines}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=miniature.model_dir())
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--chunks", type=int, help="runs per video (default: the fewest making 4x a run's length)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_long_video.json"))
    parser.add_argument("--ways", default=",".join([*WAYS, *BASELINES]), help="comma-separated ways and baselines")
    parser.add_argument("--card", action="store_true", help="write the results and bars into WEIGHTS/card.json")
    args = parser.parse_args()
    if not (PROC / "clear_refs").exists():
        parser.error("per-chunk peak memory needs Linux's /proc/self/clear_refs")
    from bench.eval_miniature import held_out

    return_freed_memory()

    model = load_miniature(args.weights)
    defaults = miniature.defaults(args.weights)
    run, size = defaults.frames, defaults.width
    card = miniature.card(args.weights).get("continuation") or {}
    new = card.get("new_frames", (run - 1) // 4)
    args.chunks = args.chunks or 1 + -(-3 * run // (4 * new))  # ceil: at least 4 runs' worth of frames
    frames = run + 4 * new * (args.chunks - 1)
    sampler = SamplerSettings(defaults.steps, defaults.shift, defaults.cfg, defaults.fourier_ratio)
    results = {}
    for name in args.ways.split(","):
        settings = replace(ContinuationSettings(new_frames=new, context_frames=card.get("context_frames", 4),
                                                first_frames=run), **WAYS.get(name, {}))
        rows, joins, costs = [], [], []
        for clip, style in held_out(args.clips):
            truth = Truth.of(clip, style, frames, size)
            if name in BASELINES:
                video, cost = BASELINES[name](truth), [{"seconds": 0.0, "peak_rss_mib": 0.0}] * args.chunks
            else:
                video, cost = run_way(model, truth, settings, sampler, frames, size)
            bounds = [(0, run)] + [(run + 4 * new * i, run + 4 * new * (i + 1)) for i in range(args.chunks - 1)]
            rows.append(chunk_metrics(video, truth, bounds))
            joins.append(join_discontinuity(video, bounds))
            costs.append(cost)
        results[name] = summarise_chunks(rows, args.chunks)
        results[name]["join_discontinuity"] = _mean(j for clip_joins in joins for j in clip_joins)
        results[name]["seconds_per_chunk"] = [_mean(c[i]["seconds"] for c in costs) for i in range(args.chunks)]
        results[name]["peak_rss_mib"] = [max(c[i]["peak_rss_mib"] for c in costs) for i in range(args.chunks)]
        print(f"\n{name} ({args.clips} clips, {frames} frames = {args.chunks} chunks)\n"
              "| chunk | object score | tracking error (px) | colour drift (/255) | s | peak RSS (MiB) |\n"
              "|---|---|---|---|---|---|")
        r = results[name]
        for c in range(args.chunks):
            shown = ["-" if r[k][c] is None else f"{r[k][c]:.{d}f}" for k, d in (("object_score", 3),
                                                                                    ("centroid_error_px", 2))]
            print(f"| {c + 1} | {shown[0]} | {shown[1]} | "
                  f"{r['colour_drift_255'][c]:.2f} | {r['seconds_per_chunk'][c]:.1f} | {r['peak_rss_mib'][c]:.0f} |")
        print(f"join discontinuity: {r['join_discontinuity']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"weights": str(args.weights), "frames": frames, "clips": args.clips,
                                    "results": results}, indent=2))
    if args.card:
        card_file = args.weights / "card.json"
        card_json = json.loads(card_file.read_text())
        card_json["long_video"] = card_section(results, frames, args.clips)
        card_file.write_text(json.dumps(card_json, indent=2) + "\n")


if __name__ == "__main__":
    with torch.no_grad():
        main()
