"""The built-in miniature I2SV model, trained end to end by this package on the toy world.

    python -m training.miniature --out miniature/            (the full recipe)
    python -m training.miniature --out /tmp/m --quick        (a minute: proves the pipeline)

Steps: render the toy world (photo-conditioned clips in five renderings) ->
train the Wan VAE architecture at a small width -> train a caption tokenizer
and build the frozen tiny Qwen2.5-VL -> cache latents and VLM features ->
train a small FlashI2V DiT and its adapter together (mode "all") -> write the
weights and a card (sizes, steps, losses).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from uniworld_core.config import DiTConfig, VAEConfig
from uniworld_core.dit import WanDiT
from uniworld_core.vae import WanVAE
from uniworld_core.vlm import EncoderAdapter, VLMEncoder, load_vlm

from .cache import build_cache
from .config import TrainConfig
from .data import ClipDataset, read_meta
from .run import train
from .toy_conditioner import build_toy_vlm
from .toyworld import STYLES, random_clip, render_photo, stylize, write_dataset
from .vae_train import VAETrainConfig, measure_latent_stats, save_vae, train_vae

TOY_TOKENS = 128  # the toy VLM's token budget (the real one reads 1024)


@dataclass
class Recipe:
    clips: int = 240
    frames: int = 17
    size: int = 64
    vae_width: int = 16
    vae_frames: int = 5  # the causal VAE works in 1+4-frame chunks: short clips teach it the same, 4x cheaper
    vae_steps: int = 1000
    vlm_hidden: int = 128
    dit: DiTConfig = DiTConfig(dim=128, ffn_dim=256, num_heads=2, num_layers=4, freq_dim=64, text_dim=64)
    dit_steps: int = 8000
    batch_size: int = 8
    lr: float = 3e-4
    seed: int = 0


QUICK = Recipe(clips=2, frames=5, size=32, vae_width=8, vae_frames=5, vae_steps=3, vlm_hidden=64,
               dit=DiTConfig(dim=64, ffn_dim=64, num_heads=1, num_layers=1, freq_dim=32, text_dim=32),
               dit_steps=2, batch_size=1)


def _vae_clips(recipe: Recipe) -> torch.Tensor:
    clips = []
    for i in range(recipe.clips):
        clip = random_clip(recipe.seed * 1_000_003 + i)
        photo = render_photo(clip, recipe.vae_frames, recipe.size)
        clips += [stylize(photo, style, clip.seed).permute(3, 0, 1, 2) * 2 - 1 for style in STYLES]
    return torch.stack(clips)


def build(out: str | Path, recipe: Recipe = Recipe(), log=print) -> dict:
    out = Path(out)
    weights = out / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meta = write_dataset(out / "data", recipe.clips, recipe.frames, recipe.size, recipe.seed)
    log(f"toy world: {recipe.clips} clips x {len(STYLES)} renderings")

    torch.manual_seed(recipe.seed)
    vae = WanVAE(VAEConfig(base_dim=recipe.vae_width))
    clips = _vae_clips(recipe)
    vae_losses = train_vae(vae, clips, VAETrainConfig(steps=recipe.vae_steps, seed=recipe.seed), log=log)
    vae.set_latent_stats(*measure_latent_stats(vae, clips))
    save_vae(vae, weights / "toy_vae.safetensors")

    entries, _ = read_meta(meta)
    vlm_dir = build_toy_vlm([e.caption for e in entries], weights / "toy_vlm", recipe.vlm_hidden, seed=recipe.seed)
    model, processor = load_vlm(vlm_dir, torch.float32)
    encoder = VLMEncoder(model, processor, EncoderAdapter(recipe.vlm_hidden), max_length=TOY_TOKENS,
                         image_size=(56, 56))
    manifest = build_cache(ClipDataset(entries, recipe.frames, 16, ((recipe.size, recipe.size),)), vae, encoder,
                           out / "cache")

    torch.manual_seed(recipe.seed)
    save_file(WanDiT(recipe.dit).state_dict(), str(out / "dit_init.safetensors"),
              metadata={"dit_config": recipe.dit.to_json()})
    cfg = TrainConfig(mode="all", steps=recipe.dit_steps, batch_size=recipe.batch_size, lr=recipe.lr,
                      warmup_steps=min(100, recipe.dit_steps // 10), schedule="cosine", weight_decay=0.0,
                      ema_decay=0.999, text_drop=0.1, seed=recipe.seed, output_dir=str(out / "dit_run"))
    exported = train(cfg, out / "cache", out / "dit_init.safetensors")
    for name in ("dit.safetensors", "adapter.safetensors"):
        (weights / f"toy_{name}").write_bytes((exported.parent / name).read_bytes())
    losses = [json.loads(line)["loss"] for line in (out / "dit_run" / "log.jsonl").read_text().splitlines()
              if "loss" in line]
    card = {"recipe": {k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in recipe.__dict__.items()},
            "cached_clips": manifest["cached"], "vae_loss": [vae_losses[0], vae_losses[-1]],
            "dit_loss_first_last_100": [sum(losses[:100]) / len(losses[:100]), sum(losses[-100:]) / len(losses[-100:])],
            "minutes": round((time.perf_counter() - started) / 60, 1),
            "bytes": sum(p.stat().st_size for p in weights.rglob("*") if p.is_file())}
    (weights / "card.json").write_text(json.dumps(card, indent=2, default=list))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="a tiny run that only proves the pipeline")
    args = parser.parse_args()
    print(json.dumps(build(args.out, QUICK if args.quick else Recipe()), indent=2, default=list))


if __name__ == "__main__":
    main()
