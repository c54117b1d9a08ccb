"""Encode once, train many times: latents and conditioning features cached as safetensors.

One file per clip (`clip_000001.safetensors`: normalised video latents, whose
first latent frame is the first-frame latent, the prompt features: VLM
hidden states for adapter training, umT5 context for FlashI2V-1.3B, and,
when the entry names a separate condition image, its latent) plus
`empty.safetensors` (the empty prompt's features, for text drop) and a
manifest with the skip counts. Training then runs without the encoders.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from uniworld_core.conditioning import all_styles, styled_prompt
from uniworld_core.model import WanVAE

from .data import ClipDataset, log


def _prompt(caption: str, style: str | None) -> str:
    if not style:
        return caption
    known = all_styles().get(style)
    return styled_prompt(caption, known) if known else f"{caption.rstrip('.')}. {style} style."


@torch.no_grad()
def build_cache(dataset: ClipDataset, vae: WanVAE, encoder, out_dir: str | Path) -> dict:
    """Encode every usable clip; returns the manifest (counts of cached and skipped clips)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(vae.parameters()).device
    cached = 0
    for index in range(len(dataset)):
        item = dataset[index]
        if item is None:
            continue
        latents = vae.encode(item["video"][None].to(device))[0].cpu()
        condition = item["image"] if "image" in item else item["video"][:, 0]  # [3, H, W] in [-1, 1]
        picture = ((condition.permute(1, 2, 0) + 1) / 2).clamp(0, 1)
        tensors = {"latents": latents.contiguous(),
                   "features": encoder.features(picture, _prompt(item["caption"], item["style"]))[0].contiguous()}
        if "image" in item:  # I2SV: the condition image is not the clip's first frame
            tensors["start_latents"] = vae.encode_image(condition[None].to(device))[0].cpu().contiguous()
        save_file(tensors, str(out / f"clip_{index:06d}.safetensors"), metadata={"caption": item["caption"]})
        cached += 1
    blank = torch.full((240, 416, 3), 0.5)
    save_file({"features": encoder.features(blank, "")[0].contiguous()}, str(out / "empty.safetensors"))
    manifest = {"cached": cached, "skipped": dict(dataset.skipped)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    log.info("cached %d clips, skipped %s", cached, dict(dataset.skipped))
    return manifest


class CachedClips(torch.utils.data.Dataset):
    """The cached clips of a folder, plus the empty prompt's features."""

    def __init__(self, folder: str | Path):
        self.files = sorted(Path(folder).glob("clip_*.safetensors"))
        if not self.files:
            raise FileNotFoundError(f"no cached clips in {folder}; run `python -m training cache` first")
        self.empty = load_file(str(Path(folder) / "empty.safetensors"))["features"]
        self.shapes = [tuple(load_file(str(f))["latents"].shape) for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return load_file(str(self.files[index]))


def epoch_batches(data: CachedClips, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's batches: clips of one latent shape (aspect bucket) each, in a seeded order."""
    rng = random.Random(seed * 100003 + epoch)
    by_shape: dict[tuple, list[int]] = {}
    for index, shape in enumerate(data.shapes):
        by_shape.setdefault(shape, []).append(index)
    batches = []
    for indices in by_shape.values():
        rng.shuffle(indices)
        batches += [indices[i:i + batch_size] for i in range(0, len(indices) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches
