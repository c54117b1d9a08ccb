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
def build_cache(dataset: ClipDataset, vae: WanVAE, encoder, out_dir: str | Path, batch_size: int = 1) -> dict:
    """Encode every usable clip; returns the manifest (counts of cached and skipped clips).

    Up to `batch_size` consecutive clips of one shape go through the VAE together. Real clips stay one at a
    time (the VAE's memory grows with the batch); the toy world's small ones batch its five renderings of a
    photo, which costs about a third per clip of encoding them one by one on the CPU.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(vae.parameters()).device
    cached, group = 0, []
    for index in range(len(dataset)):
        item = dataset[index]
        if item is None:  # skipped (counted in dataset.skipped)
            continue
        if group and (len(group) == batch_size or _shape(item) != _shape(group[0][1])):
            cached += _cache_group(group, vae, encoder, device, out)
            group = []
        group.append((index, item))
    if group:
        cached += _cache_group(group, vae, encoder, device, out)
    blank = torch.full((240, 416, 3), 0.5)
    save_file({"features": encoder.features(blank, "")[0].contiguous()}, str(out / "empty.safetensors"))
    manifest = {"cached": cached, "skipped": dict(dataset.skipped)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    log.info("cached %d clips, skipped %s", cached, dict(dataset.skipped))
    return manifest


def _shape(item: dict) -> tuple:
    """What clips must share to be encoded in one batch: the video's shape and whether a condition image comes."""
    return tuple(item["video"].shape), "image" in item and tuple(item["image"].shape)


def _cache_group(group: list[tuple[int, dict]], vae: WanVAE, encoder, device, out: Path) -> int:
    """Encode clips of one shape together and write one file per clip."""
    items = [item for _, item in group]
    latents = vae.encode(torch.stack([i["video"] for i in items]).to(device)).cpu()
    starts = None
    if "image" in items[0]:  # I2SV: the condition image is not the clip's first frame
        starts = vae.encode_image(torch.stack([i["image"] for i in items]).to(device)).cpu()
    for k, (index, item) in enumerate(group):
        condition = item["image"] if "image" in item else item["video"][:, 0]  # [3, H, W] in [-1, 1]
        picture = ((condition.permute(1, 2, 0) + 1) / 2).clamp(0, 1)
        tensors = {"latents": latents[k].contiguous(),
                   "features": encoder.features(picture, _prompt(item["caption"], item["style"]))[0].contiguous()}
        if starts is not None:
            tensors["start_latents"] = starts[k].contiguous()
        save_file(tensors, str(out / f"clip_{index:06d}.safetensors"), metadata={"caption": item["caption"]})
    return len(group)


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
