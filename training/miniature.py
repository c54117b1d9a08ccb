"""The built-in miniature I2SV model, trained end to end by this package on the toy world.

    python -m training.miniature --out miniature/            (the full recipe)
    python -m training.miniature --out /tmp/m --quick        (a minute: proves the pipeline)

Steps: render the toy world (photo-conditioned clips in five renderings) ->
train the Wan VAE architecture at a small width -> train a caption tokenizer
and build the frozen tiny Qwen2.5-VL -> cache latents and VLM features ->
train a small FlashI2V DiT and its adapter together (mode "all") -> with
`long_steps`, cache long clips and train both on for continuation (long videos)
-> write the weights and a card (sizes, steps, losses, sampling settings).

Run again into the same DIR, it reuses the stages whose recipe fields are
unchanged (the VAE, the cache, the DiT, the long cache and the continuation;
see the `*_stage` functions).

Then `python bench/eval_miniature.py DIR/weights --card` adds the metrics, and
DIR/weights is what ships in uniworld_core/miniature_model (docs/training.md: its
minutes, stage by stage, and its metrics).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from uniworld_core.conditioning import CUSTOM_STYLES_FILE, ENCODER_SETTINGS_FILE, VLMEncoder, all_styles
from uniworld_core.model import DiTConfig, EncoderAdapter, VAEConfig, WanDiT, WanVAE
from uniworld_core.presets import miniature as shipped
from uniworld_core.sampling import REPORT
from uniworld_core.weights import load, load_vlm

from .cache import build_cache
from .config import TrainConfig
from .data import ClipDataset, read_meta
from .run import train
from .toy_conditioner import build_toy_vlm
from .toyworld import STYLES, WORLD_VERSION, object_masks, random_clip, render_photo, stylize, write_dataset
from .vae_train import VAETrainConfig, frame_errors, init_for_training, measure_latent_stats, save_vae, train_vae

TOY_TOKENS = 128  # the toy VLM's token budget (the real one reads 1024)
TOY_IMAGE = (56, 56)  # the toy VLM's image size (the real one reads 416x240)
EXAMPLE_SEED = 8_000_000  # example inputs: held-out clips, far from the training seeds


@dataclass
class Recipe:
    # Toy photos for the DiT's data (five renderings each). More photos generalise to unseen ones: 240 -> 960
    # (run 9) took the direction right from 39% to 72%; 1920 (run 10, with 30000 steps) to 83%, and frame-0
    # PSNR above the flat frame's, for about 20 more cache minutes per doubling.
    clips: int = 1920
    frames: int = 17
    size: int = 64
    vae_clips: int = 240  # toy photos for the VAE stage, apart from `clips` so the DiT's data can grow alone
    vae_width: int = 16
    vae_res_blocks: int = 1  # per stage (Wan2.1: 2): about half the convolutions per step
    vae_dim_mult: tuple[int, ...] = (1, 2, 4, 4)  # Wan2.1's four stages: 8x smaller in space
    vae_temporal: tuple[bool, ...] = (False, True, True)  # the stages that also halve time (4x in all)
    # Latent channels (Wan2.1: 16). Run 13 (docs/training.md): 4 channels on a VAE 4x in space kept more of the
    # objects (0.656 against 0.579), but the DiT reading them in 4x4 patches kept fewer (0.268 against 0.343).
    vae_z_dim: int = 16
    vae_frames: int = 17  # the generated length: errors build up over chunks beyond what training saw
    vae_crop: int = 32  # random 32x32 windows: the same convolutions, 4x cheaper steps
    vae_image_steps: int = 600  # single frames, batches of 16 (the frame-wise start, see init_for_training)
    # Whole clips, batches of 2. Each doubling kept about 0.07 more of the objects in the round trip (800 -> 2000
    # -> 4000: 0.37 -> 0.44 -> 0.50); run 11 doubled it with minutes the batched cache saves.
    vae_steps: int = 1600
    # The decoder reads the posterior mean plus N(0, 0.3^2) (issue #20): decoding the bare mean left the latent
    # scale free, and the first latent frame (frame 0, encoded alone) drifted to a third of the others' scale
    # (across-clip variance 0.11 against 1.1 once normalised), below the DiT's noise at every level it samples.
    # 0.3 balanced it (0.38 against 0.24 in 400-step trials) at the same round-trip PSNR; 0.6 cost 0.7 dB.
    vae_latent_noise: float = 0.3
    # The VAE's reconstruction counts the pixels in and 2 px around the objects 1 + vae_object_weight times (0 =
    # off), as the DiT's loss does. Measured at 4 (docs/training.md, run 12): the round trip kept fewer of the
    # objects (0.566 against 0.579) and frame 0 lost 1 dB, so it is off.
    vae_object_weight: float = 0.0
    vlm_hidden: int = 128
    # Run 12 (docs/training.md): 1.5x the width (2.2 M parameters, 1.0 M before) for 1.7x the minutes; the
    # smaller DiT fitted the objects less closely than its VAE allowed, and this one keeps more of them
    dit: DiTConfig = DiTConfig(dim=192, ffn_dim=384, num_heads=3, num_layers=4, freq_dim=64, text_dim=64)
    # The loss still falls at 12000 (run 7: 20000 keeps 0.164 of the objects, 12000 0.116); each clip is seen
    # about 28 times
    dit_steps: int = 34000
    # Train on the noise levels the sampler visits: at the resolution-dependent shift (1.6 at 64x64)
    # sigma > 0.95 is 0.7% of draws, yet the sampler's shift 7 spends a quarter of its steps there,
    # and a DiT trained so returns one washed-out average clip whatever the image (run 3).
    dit_shift: float = REPORT.shift
    batch_size: int = 8
    # 1e-3 fits faster and samples better than 3e-4 (run 8: frame-0 PSNR +2.8 dB, centroid 10.5 -> 7.9 px,
    # style 0.80 -> 0.90); 2e-3 fits better still but samples worse (docs/training.md).
    lr: float = 1e-3
    ema_decay: float = 0.999
    # The DiT's loss counts the latent cells an object touches 1 + object_weight times (training.objective,
    # region_weight; 0 = off): unweighted, the DiT fits backgrounds and styles, not the objects (issue #20).
    object_weight: float = 4.0  # run 7 (docs/training.md): object score 0.034 -> 0.116 at 12000 steps
    # Long videos (issue #23): a share of the DiT's batches continue 1..max_context clean latent frames of a
    # clip window; the card's window (context_frames + new_frames = the clip's 5 latent frames) is what
    # `generate --frames N` and the Extend Video node use beyond one run.
    continuation: float = 0.3
    max_context: int = 3
    context_noise: float = 0.0  # continuation context corruption (training.objective); 0 in run 5
    context_frames: int = 2
    new_frames: int = 3
    # The continuation stage (issue #23; 0 steps = off): the DiT stage's export trained on for `long_steps` more
    # steps on `long_clips` photos rendered `long_frames` long, in windows of context_frames + new_frames latent
    # frames, a `long_continuation` share of them starting mid-clip as continuations. The DiT stage's 17-frame
    # clips only let a continuation's context begin at the clip's first latent frame (frame 0 encoded alone);
    # at inference it never does.
    long_clips: int = 240
    long_frames: int = 41
    long_steps: int = 5000
    long_continuation: float = 0.7
    long_lr: float = 3e-4
    # Sampling defaults written to the card (the CLI and the evaluation read them, the toy workflows are set
    # to them). Shift 7 is the DiT's training shift; it samples level or better than shift 3 on runs 8 and 9
    # (direction 39% -> 50% on run 8). cfg 2: the real model's cfg 5 gave washed-out first frames (run 4).
    sample_shift: float = shipped.DEFAULTS.shift
    sample_cfg: float = shipped.DEFAULTS.cfg
    sample_steps: int = shipped.DEFAULTS.steps
    seed: int = 0

    def __post_init__(self):
        # A mismatch would otherwise surface as a shape error deep in the DiT stage, after the VAE and cache
        if not self.dit.in_dim == self.dit.out_dim == self.vae_z_dim:
            raise ValueError(f"a DiT reading {self.dit.in_dim} and predicting {self.dit.out_dim} latent channels "
                             f"for a VAE with {self.vae_z_dim}: set the DiT's in_dim and out_dim to vae_z_dim")
        factor = VAEConfig(dim_mult=tuple(self.vae_dim_mult)).spatial_factor
        for cell in {factor * p for p in self.dit.patch_size[1:]}:  # px per token
            if self.size % cell:
                raise ValueError(f"frames of {self.size} px do not split into the DiT's tokens of {cell} px: "
                                 f"use a multiple of {cell}")


QUICK = Recipe(clips=2, vae_clips=2, frames=5, size=32, vae_width=8, vae_frames=9, vae_crop=16, vae_image_steps=2,
               vae_steps=3, vlm_hidden=64,
               dit=DiTConfig(dim=64, ffn_dim=64, num_heads=1, num_layers=1, freq_dim=32, text_dim=32),
               dit_steps=2, batch_size=1, long_clips=1, long_frames=13, long_steps=2)


def vae_config(recipe: Recipe) -> VAEConfig:
    """The recipe's VAE: the Wan2.1 architecture at its width, residual blocks and stages."""
    return VAEConfig(base_dim=recipe.vae_width, z_dim=recipe.vae_z_dim, num_res_blocks=recipe.vae_res_blocks,
                     dim_mult=tuple(recipe.vae_dim_mult), temporal_downsample=tuple(recipe.vae_temporal))


def _vae_clips(recipe: Recipe, count: int, frames: int, first_seed: int) -> torch.Tensor:
    clips = []
    for i in range(count):
        clip = random_clip(first_seed + i)
        photo = render_photo(clip, frames, recipe.size)
        clips += [stylize(photo, style, clip.seed).permute(3, 0, 1, 2) * 2 - 1 for style in STYLES]
    return torch.stack(clips)


def _vae_weights(recipe: Recipe, count: int, frames: int, first_seed: int) -> torch.Tensor:
    """Per-pixel loss weights [count x styles, 1, T, H, W] for `_vae_clips`' clips: 1 + vae_object_weight in
    and 2 px around the objects (neon's glow and pencil's strokes reach past the shapes), 1 elsewhere."""
    weights = []
    for i in range(count):
        cover = object_masks(random_clip(first_seed + i), frames, recipe.size).amax(0)  # [T, H, W]
        grown = torch.nn.functional.max_pool2d(cover[:, None], 5, stride=1, padding=2)[:, 0]
        weights += [1 + recipe.vae_object_weight * grown[None]] * len(STYLES)
    return torch.stack(weights)


def write_extras(weights: Path, recipe: Recipe) -> None:
    """What inference needs beside the weights: the VLM's encoder settings, the toy styles, example inputs."""
    (weights / "toy_vlm" / ENCODER_SETTINGS_FILE).write_text(
        # "" as negative: the unconditional branch was trained on empty-prompt features (text drop).
        json.dumps({"max_length": TOY_TOKENS, "image_size": list(TOY_IMAGE), "default_negative": ""}))
    # Styles the built-in list lacks, with the prompt text the cache used for them (training.cache).
    extra = [{"name": s, "description": f"toy world: {s}", "prompt": f"{s} style"}
             for s in STYLES if s not in all_styles()]
    (weights / CUSTOM_STYLES_FILE).write_text(json.dumps(extra, indent=1))
    (weights / "examples").mkdir(exist_ok=True)
    entries = []
    for i, style in enumerate(STYLES[1:]):
        clip = random_clip(EXAMPLE_SEED + i)
        frame = render_photo(clip, 1, recipe.size)[0]
        name = f"examples/toy_photo_{i}.png"
        Image.fromarray((frame * 255).round().to(torch.uint8).numpy()).save(weights / name)
        entries.append({"image": name, "prompt": clip.caption(), "style": style})
    (weights / shipped.EXAMPLES_FILE).write_text(json.dumps(entries, indent=1))


def train_toy_vae(recipe: Recipe, log=print) -> tuple[WanVAE, dict]:
    """The VAE stage: the Wan2.1 architecture at the recipe's size, trained on toy clips; returns it and its card."""
    torch.manual_seed(recipe.seed)
    vae = init_for_training(WanVAE(vae_config(recipe)))
    clips = _vae_clips(recipe, recipe.vae_clips, recipe.vae_frames, recipe.seed * 1_000_003)
    held_out = _vae_clips(recipe, 2, recipe.frames, 5_000_000 + recipe.seed)  # full-length clips, unseen seeds
    cfg = VAETrainConfig(steps=recipe.vae_steps, image_steps=recipe.vae_image_steps, batch_size=2,
                         crop=recipe.vae_crop, eval_every=max(1, recipe.vae_steps // 10), seed=recipe.seed,
                         latent_noise=recipe.vae_latent_noise)
    weights = (_vae_weights(recipe, recipe.vae_clips, recipe.vae_frames, recipe.seed * 1_000_003)
               if recipe.vae_object_weight > 0 else None)
    losses = train_vae(vae, clips, cfg, held_out, log=log, weights=weights)
    vae.set_latent_stats(*measure_latent_stats(vae, clips))
    return vae, {"vae_loss": [losses[0], losses[-1]], "vae_held_out_l1_first_later": frame_errors(vae, held_out)}


VAE_STAGE = "vae_stage.json"  # DIR/vae_stage.json: the recipe fields, card and minutes of a finished VAE stage
CACHE_STAGE = "cache_stage.json"  # DIR/cache_stage.json: the same for a finished cache
DIT_STAGE = "dit_stage.json"  # DIR/dit_stage.json: the same for a finished DiT stage
LONG_CACHE_STAGE = "long_cache_stage.json"  # DIR/long_cache_stage.json: the continuation stage's long clips
LONG_STAGE = "long_stage.json"  # DIR/long_stage.json: the continuation stage's training


def _recipe_json(recipe: Recipe) -> dict:
    return json.loads(json.dumps(recipe.__dict__, default=lambda v: v.__dict__))


def _vae_fields(recipe: Recipe) -> dict:
    """The recipe fields the VAE stage depends on, as JSON values."""
    fields = {k: v for k, v in _recipe_json(recipe).items() if k.startswith("vae_") or k in ("size", "seed")}
    return {**fields, "toy_world": WORLD_VERSION}


# Recipe fields older stage records lack, with the value they were made with
_OLDER_FIELDS = {"toy_world": 1, "vae_object_weight": 0.0, "vae_z_dim": 16}
LONG_FIELDS = ("long_clips", "long_frames", "long_steps", "long_continuation", "long_lr")  # the continuation stage's


def _made_from(saved: dict, fields: dict) -> bool:
    """Whether recorded recipe fields are `fields` (older records count as made with `_OLDER_FIELDS`)."""
    return {k: v for k, v in _OLDER_FIELDS.items() if k in fields} | saved == fields


def _finished(record: Path, fields: dict) -> dict | None:
    """The record of a finished stage (`{"recipe", "minutes", ...}`) when it was made from these recipe fields."""
    saved = json.loads(record.read_text()) if record.exists() else None
    return saved if saved is not None and _made_from(saved.get("recipe", {}), fields) else None


def _reusable(stage: str, record: Path, fields: dict, made: Path, valid: bool = True, log=print) -> dict | None:
    """The record of a finished stage whose output `made` exists, when `valid` (what it was made from was
    reused) and its recipe fields match. Else None, and the record goes: a stage half made again must not
    pass for the old one."""
    saved = _finished(record, fields) if valid and made.exists() else None
    if saved is None:
        record.unlink(missing_ok=True)
    else:
        log(f"{stage}: reusing {made} (its recipe fields match {record})")
    return saved


def _write_record(record: Path, fields: dict, started: float, **extra) -> None:
    minutes = round((time.perf_counter() - started) / 60, 1)
    record.write_text(json.dumps({"recipe": fields, "minutes": minutes, **extra}, indent=1))


def vae_stage(recipe: Recipe, out: Path, log=print) -> tuple[WanVAE, dict, float | None]:
    """The VAE stage of `build`, or its result from an earlier run into the same DIR with the same VAE recipe.

    The VAE is the longest stage; an interrupted or changed recipe whose VAE fields are unchanged reuses it
    (the stage is deterministic). Returns the VAE, its card and the minutes it took when reused (else None).
    """
    path, record, fields = out / "weights" / "toy_vae.safetensors", out / VAE_STAGE, _vae_fields(recipe)
    saved = _reusable("vae", record, fields, path, log=log)
    if saved is not None:
        return load(path, "vae").model.eval(), saved["card"], saved["minutes"]
    started = time.perf_counter()
    vae, card = train_toy_vae(recipe, log)
    save_vae(vae, path)
    _write_record(record, fields, started, card=card)
    return vae, card, None


def cache_stage(recipe: Recipe, out: Path, dataset: ClipDataset, vae: WanVAE, encoder: VLMEncoder,
                vae_reused: bool, log=print) -> tuple[dict, float | None]:
    """The cache stage of `build` (latents and VLM features), reused with a reused VAE stage and the same recipe
    fields (the toy world, the VLM and the tokenizer are deterministic). Returns the cache's manifest and the
    minutes it took when reused (else None)."""
    fields = {**_vae_fields(recipe), "clips": recipe.clips, "frames": recipe.frames, "vlm_hidden": recipe.vlm_hidden}
    record, manifest = out / CACHE_STAGE, out / "cache" / "manifest.json"
    saved = _reusable("cache", record, fields, manifest, vae_reused, log)
    if saved is not None:
        return json.loads(manifest.read_text()), saved["minutes"]
    started = time.perf_counter()
    built = build_cache(dataset, vae, encoder, out / "cache", batch_size=len(STYLES))
    _write_record(record, fields, started)
    return built, None


def latent_object_mask(clip_seed: int, recipe: Recipe, vae_cfg: VAEConfig, frames: int | None = None) -> torch.Tensor:
    """The latent cells [1, F, h, w] (0 or 1) that any object of a toy clip (`frames` long, by default the
    recipe's) touches in any frame they encode.

    Latent frame 0 encodes frame 0 alone, latent frame j frames 4j-3..4j (the causal VAE's grouping).
    """
    frames = frames or recipe.frames
    cover = object_masks(random_clip(clip_seed), frames, recipe.size).amax(0)  # [T, H, W]
    step = vae_cfg.temporal_factor
    groups = [cover[:1]] + [cover[1 + j:1 + j + step] for j in range(0, frames - 1, step)]
    per_frame = torch.stack([g.amax(0) for g in groups])  # [F, H, W]
    cells = torch.nn.functional.max_pool2d(per_frame[None], vae_cfg.spatial_factor)[0]
    return (cells > 0).float()[None]


def add_object_masks(cache: Path, entries: list, recipe: Recipe, frames: int | None = None) -> int:
    """Write each cached toy clip's `loss_mask` (its objects' latent cells) into its cache file; returns how many
    files gained one. The clip's seed comes from its entry's folder name (`clipNNNNN_<style>`); `frames` is the
    clips' length (by default the recipe's)."""
    added, vae_cfg = 0, vae_config(recipe)
    for path in sorted(cache.glob("clip_*.safetensors")):
        with safe_open(str(path), "pt") as f:
            if "loss_mask" in f.keys():
                continue
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        entry = entries[int(path.stem.split("_")[1])]
        clip_index = int(Path(entry.path).name[len("clip"):].split("_")[0])
        tensors["loss_mask"] = latent_object_mask(recipe.seed * 1_000_003 + clip_index, recipe, vae_cfg, frames)
        if tensors["loss_mask"].shape[1:] != tensors["latents"].shape[1:]:
            raise ValueError(f"{path}: object mask {tuple(tensors['loss_mask'].shape)} does not fit latents "
                             f"{tuple(tensors['latents'].shape)}")
        save_file(tensors, str(path), metadata=metadata)
        added += 1
    return added


def toy_encoder(captions: list[str], folder: Path, recipe: Recipe) -> VLMEncoder:
    """The condition stage: the caption tokenizer and the frozen tiny Qwen2.5-VL (saved in `folder`), with a
    fresh adapter."""
    vlm_dir = build_toy_vlm(captions, folder, recipe.vlm_hidden, seed=recipe.seed)
    model, processor = load_vlm(vlm_dir, torch.float32)
    return VLMEncoder(model, processor, EncoderAdapter(recipe.vlm_hidden), max_length=TOY_TOKENS,
                      image_size=TOY_IMAGE)


def train_toy_dit(recipe: Recipe, cache: Path, out: Path, resume: bool = True) -> tuple[Path, list[float]]:
    """The DiT stage: a fresh FlashI2V DiT and its adapter trained together on the cache; the export and losses.

    An interrupted stage (`out/dit_run` of the same recipe, `resume`) continues from its checkpoint; one of
    another recipe, or on a cache made again, is started afresh.
    """
    _run_folder(out / "dit_run", _dit_fields(recipe), resume)
    torch.manual_seed(recipe.seed)
    save_file(WanDiT(recipe.dit).state_dict(), str(out / "dit_init.safetensors"),
              metadata={"dit_config": recipe.dit.to_json()})
    cfg = _train_config(recipe, out / "dit_run", recipe.dit_steps, recipe.lr, recipe.continuation)
    exported = train(cfg, cache, out / "dit_init.safetensors")
    return exported, _losses(out / "dit_run")


def _train_config(recipe: Recipe, run: Path, steps: int, lr: float, continuation: float,
                  window: int = 0) -> TrainConfig:
    """The DiT and adapter training both DiT stages share (mode "all", cosine, EMA, the objects weighted)."""
    return TrainConfig(mode="all", steps=steps, batch_size=recipe.batch_size, lr=lr,
                       warmup_steps=min(100, steps // 10), schedule="cosine", weight_decay=0.0,
                       ema_decay=recipe.ema_decay, text_drop=0.1, seed=recipe.seed, output_dir=str(run),
                       shift=recipe.dit_shift, continuation=continuation, max_context=recipe.max_context,
                       context_noise=recipe.context_noise, region_weight=recipe.object_weight, window=window)


def dit_stage(recipe: Recipe, out: Path, resume: bool, log=print) -> tuple[Path, list[float], float | None]:
    """The DiT stage of `build`, or its export from an earlier run into the same DIR with the same DiT recipe
    fields on a reused cache (`resume`). Returns the export, its losses and the minutes it took when reused."""
    record, fields = out / DIT_STAGE, _dit_fields(recipe)
    exported = out / "dit_run" / "export" / "dit.safetensors"
    saved = _reusable("dit", record, fields, exported, resume, log)
    if saved is not None:
        return exported, _losses(out / "dit_run"), saved["minutes"]
    started = time.perf_counter()
    exported, losses = train_toy_dit(recipe, out / "cache", out, resume)
    _write_record(record, fields, started)
    return exported, losses, None


def _dit_fields(recipe: Recipe) -> dict:
    """The recipe fields the DiT stage depends on (all but the continuation stage's)."""
    return {k: v for k, v in _recipe_json(recipe).items() if k not in LONG_FIELDS}


def _run_folder(run: Path, fields: dict, resume: bool) -> None:
    """Keep a training folder to resume when it was made from these recipe fields and `resume`; else empty it."""
    record = run / "recipe.json"
    if run.exists() and not (resume and record.exists() and _made_from(json.loads(record.read_text()), fields)):
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(fields))


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines() if "loss" in line]


def _first_last_100(losses: list[float]) -> list[float]:
    return [sum(losses[:100]) / len(losses[:100]), sum(losses[-100:]) / len(losses[-100:])]


def long_cache_stage(recipe: Recipe, out: Path, vae: WanVAE, encoder: VLMEncoder, cache_valid: bool,
                     log=print) -> float | None:
    """The continuation stage's data: `long_clips` toy photos rendered `long_frames` long, cached with their
    object masks. Reused when `cache_valid` (the VAE and VLM are unchanged) and its recipe fields match;
    returns the minutes it took when reused (else None)."""
    fields = {**_vae_fields(recipe), "long_clips": recipe.long_clips, "long_frames": recipe.long_frames,
              "vlm_hidden": recipe.vlm_hidden}
    record, manifest = out / LONG_CACHE_STAGE, out / "long_cache" / "manifest.json"
    saved = _reusable("long cache", record, fields, manifest, cache_valid, log)
    if saved is not None:
        return saved["minutes"]
    started = time.perf_counter()  # the long clips are rendered only for a cache made (again)
    meta = write_dataset(out / "long_data", recipe.long_clips, recipe.long_frames, recipe.size, recipe.seed)
    entries, _ = read_meta(meta)
    build_cache(ClipDataset(entries, recipe.long_frames, 16, ((recipe.size, recipe.size),)), vae, encoder,
                out / "long_cache", batch_size=len(STYLES))
    add_object_masks(out / "long_cache", entries, recipe, recipe.long_frames)
    _write_record(record, fields, started)
    return None


def continuation_stage(recipe: Recipe, out: Path, exported: Path, resume: bool,
                       log=print) -> tuple[Path, list[float], float | None]:
    """The continuation stage (`Recipe.long_steps`) on the long cache: the DiT stage's export (DiT and adapter)
    trained on in inference-shaped windows. Reused when `resume` (the DiT stage and the long cache were) and
    its recipe fields match; an interrupted one resumes. Returns the export, its losses and the minutes it
    took when reused (else None)."""
    run, record, fields = out / "long_run", out / LONG_STAGE, {**_recipe_json(recipe), "toy_world": WORLD_VERSION}
    done = run / "export" / "dit.safetensors"
    saved = _reusable("continuation", record, fields, done, resume, log)
    if saved is not None:
        return done, _losses(run), saved["minutes"]
    started = time.perf_counter()
    _run_folder(run, fields, resume)
    cfg = _train_config(recipe, run, recipe.long_steps, recipe.long_lr, recipe.long_continuation,
                        window=recipe.context_frames + recipe.new_frames)
    long_export = train(cfg, out / "long_cache", exported / "dit.safetensors", str(exported / "adapter.safetensors"))
    _write_record(record, fields, started)
    return long_export, _losses(run), None


def build(out: str | Path, recipe: Recipe = Recipe(), log=print) -> dict:
    """The whole recipe: toy world -> VAE -> condition -> cache -> DiT (-> long cache -> continuation, with
    `long_steps`) -> DIR/weights with card.json."""
    out = Path(out)
    weights = out / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    marks, minutes = [time.perf_counter()], {}

    def lap(stage: str, reused: float | None = None) -> None:
        """Record a stage's minutes; a reused stage reports those it took when it ran."""
        now = time.perf_counter()
        minutes[stage] = round((now - marks[-1]) / 60, 1) if reused is None else reused
        marks.append(now)
        log(f"{stage}: {minutes[stage]} min" + (" (reused)" if reused is not None else ""))

    meta = write_dataset(out / "data", recipe.clips, recipe.frames, recipe.size, recipe.seed)
    lap("toy world")
    vae, vae_card, reused = vae_stage(recipe, out, log)
    lap("vae", reused)
    entries, _ = read_meta(meta)
    encoder = toy_encoder([e.caption for e in entries], weights / "toy_vlm", recipe)
    manifest, cache_reused = cache_stage(recipe, out, ClipDataset(entries, recipe.frames, 16,
                                                                  ((recipe.size, recipe.size),)),
                                         vae, encoder, reused is not None, log)
    add_object_masks(out / "cache", entries, recipe)  # cheap; reused caches of older recipes gain them too
    lap("cache", cache_reused)
    exported, losses, dit_reused = dit_stage(recipe, out, cache_reused is not None, log)
    lap("dit", dit_reused)
    long_reused = continuation_reused = None
    if recipe.long_steps:
        long_reused = long_cache_stage(recipe, out, vae, encoder, cache_reused is not None, log)
        lap("long cache", long_reused)
        exported, long_losses, continuation_reused = continuation_stage(
            recipe, out, exported.parent, dit_reused is not None and long_reused is not None, log)
        lap("continuation", continuation_reused)
    for name in ("dit.safetensors", "adapter.safetensors"):
        (weights / f"toy_{name}").write_bytes((exported.parent / name).read_bytes())
    write_extras(weights, recipe)
    card = {"recipe": _recipe_json(recipe), "toy_world": WORLD_VERSION,
            "cached_clips": manifest["cached"], **vae_card,
            "dit_loss_first_last_100": _first_last_100(losses),
            "sampling": {"shift": recipe.sample_shift, "cfg": recipe.sample_cfg, "steps": recipe.sample_steps},
            "continuation": {"trained_share": recipe.continuation, "max_context": recipe.max_context,
                             "context_frames": recipe.context_frames, "new_frames": recipe.new_frames,
                             **({"long_frames": recipe.long_frames, "long_steps": recipe.long_steps,
                                 "long_loss_first_last_100": _first_last_100(long_losses)}
                                if recipe.long_steps else {})}
            if recipe.continuation > 0 or recipe.long_steps else None,
            "minutes": round(sum(minutes.values()), 1), "stage_minutes": minutes,
            "reused_stages": [name for name, was in (("vae", reused), ("cache", cache_reused), ("dit", dit_reused),
                                                     ("long cache", long_reused), ("continuation", continuation_reused))
                              if was is not None],
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
