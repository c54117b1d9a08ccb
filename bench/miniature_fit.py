"""How well a miniature DiT fits its training data: the relative error of its one-step clean prediction.

    python bench/miniature_fit.py BUILD_DIR [--clips 40] [--first 0] [--held-out]

BUILD_DIR is a `python -m training.miniature --out DIR` folder (its weights/ and cache/). For cached
training clips noised to each sigma as in training (FlashI2V latent shifting), the DiT's velocity gives
a clean estimate x0 = x_t + proj - sigma * v; its squared error over the clips' latent variance is
printed for all cells, latent frame 0, the later frames, and inside / outside the objects' cells
(the cache's `loss_mask`). The toy world is deterministic (the first frame, caption and style fix the
clip), so a DiT that fits it has a near-zero error even at sigma near 1. The same is printed with each
clip's start frame swapped for another clip's: the gap is how much the DiT reads the image.

With --held-out the clips are toy photos the build never trained on, cached once into
BUILD_DIR/held_out/ by the build's own VAE and VLM: the gap to the training clips is over-fitting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script
from uniworld_core.model import high_frequency  # noqa: E402
from uniworld_core.sampling import REPORT, timesteps_from_sigmas, training_pair  # noqa: E402
from uniworld_core.weights import load, load_adapter  # noqa: E402

SIGMAS = (0.1, 0.3, 0.5, 0.8, 0.95)
HELD_OUT_DATA_SEED = 7  # write_dataset's clip seeds 7_000_021 + i: apart from the training seeds 0 + i


def held_out_cache(build: Path, clips: int) -> Path:
    """A cache of `clips` unseen toy photos (all renderings), encoded by the build's VAE and frozen VLM."""
    import dataclasses

    from training.cache import build_cache
    from training.data import ClipDataset, read_meta
    from training.miniature import Recipe, add_object_masks
    from training.toyworld import write_dataset
    from uniworld_core.conditioning import vlm_encoder
    from uniworld_core.model import DiTConfig

    folder = build / "held_out"
    if (folder / "cache" / "manifest.json").exists():
        return folder / "cache"
    fields = json.loads((build / "weights" / "card.json").read_text())["recipe"]
    known = {f.name for f in dataclasses.fields(Recipe)} - {"dit"}  # the VAE's fields size the object masks
    recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in known},
                    dit=DiTConfig.from_dict(fields["dit"]))  # the build's own, which fits its VAE
    entries, _ = read_meta(write_dataset(folder / "data", clips, recipe.frames, recipe.size, HELD_OUT_DATA_SEED))
    vae = load(build / "weights" / "toy_vae.safetensors", "vae").model.eval()
    encoder = vlm_encoder(build / "weights" / "toy_vlm", None, dtype=torch.float32)  # features only, as cached
    dataset = ClipDataset(entries, recipe.frames, 16, ((recipe.size, recipe.size),))
    build_cache(dataset, vae, encoder, folder / "cache")
    add_object_masks(folder / "cache", entries, dataclasses.replace(recipe, seed=HELD_OUT_DATA_SEED))
    return folder / "cache"


@torch.no_grad()
def relative_errors(dit, clips: dict[str, torch.Tensor], context: torch.Tensor, start: torch.Tensor,
                    sigma: float, generator: torch.Generator) -> dict[str, float]:
    """Relative squared error of the one-step clean estimate at `sigma`, overall and by region."""
    x0 = clips["latents"]
    noise = torch.randn(x0.shape, generator=generator)
    proj = dit.project_start(start)
    sigmas = torch.full((x0.shape[0],), sigma)
    x_t, _ = training_pair(x0, noise, sigmas, proj)
    features = high_frequency(start, REPORT.fourier_ratio).expand(-1, -1, x0.shape[2], -1, -1)
    estimate = x_t + proj - sigma * dit(x_t, timesteps_from_sigmas(sigmas), context, features)
    error = (estimate - x0).square().mean(1, keepdim=True)  # [B, 1, F, h, w]
    var = x0.var(0).mean()
    found = {"all": error.mean() / var, "frame 0": error[:, :, :1].mean() / var, "later": error[:, :, 1:].mean() / var}
    if "loss_mask" in clips:
        mask = clips["loss_mask"]
        found["objects"] = (error * mask).sum() / mask.sum() / var
        found["background"] = (error * (1 - mask)).sum() / (1 - mask).sum() / var
    return {k: float(v) for k, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("build", type=Path)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--first", type=int, default=0, help="the first cached clip used")
    parser.add_argument("--held-out", action="store_true", help="unseen toy photos instead of the training cache")
    args = parser.parse_args()
    weights, cache = args.build / "weights", args.build / "cache"
    if args.held_out:
        cache = held_out_cache(args.build, -(-args.clips // 4))  # 4-5 renderings per photo
    dit = load(weights / "toy_dit.safetensors", "dit").model.eval()
    card = (weights / "card.json").read_text()
    hidden = int(json.loads(card)["recipe"]["vlm_hidden"])
    adapter = load_adapter(weights / "toy_adapter.safetensors", vlm_hidden=hidden).eval()
    files = sorted(cache.glob("clip_*.safetensors"))[args.first:args.first + args.clips]
    loaded = [load_file(str(f)) for f in files]
    clips = {k: torch.stack([c[k] for c in loaded]) for k in loaded[0] if k != "features"}
    with torch.no_grad():
        context = adapter(torch.stack([c["features"] for c in loaded]))
    start = clips.get("start_latents", clips["latents"][:, :, :1])
    print(f"{len(files)} cached clips from {cache}; relative error of the one-step clean estimate")
    for sigma in SIGMAS:
        for label, image in (("own start", start), ("swapped start", start.roll(1, 0))):
            found = relative_errors(dit, clips, context, image, sigma, torch.Generator().manual_seed(0))
            print(f"sigma {sigma:.2f} {label:>13}: " + ", ".join(f"{k} {v:.3f}" for k, v in found.items()))


if __name__ == "__main__":
    main()
