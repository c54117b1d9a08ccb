"""Run a training: cached clips -> trained weights (adapter, FlashI2V modules, LoRA or full DiT).

    python -m training train --config lora.json --cache cache/ --dit dit.safetensors
    accelerate launch --num_processes 2 -m training train ...      (several devices)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from uniworld_core.model import DIT_TEXT_DIM, EncoderAdapter
from uniworld_core.weights import load, load_adapter

from .cache import CachedClips, epoch_batches
from .config import ConfigError, TrainConfig
from .data import log
from .sharding import is_sharded
from .trainer import Trainer


def _adapter(cfg: TrainConfig, path: str | None, feature_dim: int, text_dim: int):
    if path:
        return load_adapter(path, vlm_hidden=feature_dim)
    if cfg.mode in ("adapter", "all"):  # a new adapter: the official 4096-wide hidden layer, or 4x a small DiT's
        return EncoderAdapter(feature_dim, DIT_TEXT_DIM if text_dim == DIT_TEXT_DIM else 4 * text_dim, text_dim)
    return None


def _batch(data: CachedClips, indices: list[int], rank: int, world: int) -> dict[str, torch.Tensor]:
    """Share `rank` of `world` shares of a batch (processes of one sequence-parallel group share one)."""
    share = len(indices) // world
    mine = [data[i] for i in indices[rank * share:(rank + 1) * share]]
    batch = {key: torch.stack([m[key] for m in mine]) for key in ("latents", "features")}
    batch["empty_features"] = data.empty.expand_as(batch["features"])
    for optional in ("start_latents", "loss_mask"):
        if all(optional in m for m in mine):
            batch[optional] = torch.stack([m[optional] for m in mine])
    return batch


def _validate(trainer: Trainer, data: CachedClips, out: Path, vae) -> dict | None:
    """Sample a clip from the first cached clip's first frame with the EMA weights; the main process saves it.

    Every process samples under FSDP or sequence parallelism (the DiT needs them all); otherwise only the
    main one is called.
    """
    from safetensors.torch import save_file

    latents, loss = trainer.validate(data[0], data.empty, trainer.cfg.validation_steps)
    if not trainer.accelerator.is_main_process:
        return None
    folder = out / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    if vae is not None:
        from uniworld_core.media import save_webp, video_to_frames

        path = save_webp(video_to_frames(vae.decode(latents.to(next(vae.parameters()).device))),
                         folder / f"step_{trainer.step:06d}.webp")
    else:
        path = folder / f"step_{trainer.step:06d}.safetensors"
        save_file({"latents": latents.cpu().contiguous()}, str(path))
    return {"step": trainer.step, "validation_loss": loss, "validation_clip": str(path)}


def _tensorboard(folder: Path):
    """A SummaryWriter when TensorBoard is installed (optional), else None."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder / "tensorboard"))


def train(cfg: TrainConfig, cache_dir: str | Path, dit_path: str | Path, adapter_path: str | None = None,
          accelerator=None, vae_path: str | None = None) -> Path:
    """Train for `cfg.steps`, resuming from `output_dir/checkpoint` when it exists; returns the export."""
    from accelerate import Accelerator

    acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    data = CachedClips(cache_dir)
    shares = acc.num_processes // cfg.sequence_parallel  # processes of one sequence group share their samples
    if cfg.batch_size % shares:
        raise ConfigError(f"batch_size {cfg.batch_size} is not a multiple of the {shares} data-parallel shares "
                          f"({acc.num_processes} processes / sequence_parallel {cfg.sequence_parallel}); set "
                          f"batch_size to a multiple of {shares} or launch fewer processes")
    # under FSDP the whole DiT is read into host memory once per process; sharding moves only its slice to the GPU
    dit = load(dit_path, "dit", "cpu" if is_sharded(acc) else acc.device, torch.float32).model
    adapter = _adapter(cfg, adapter_path, data.empty.shape[-1], dit.cfg.text_dim)
    if adapter is not None:
        adapter.to(acc.device)
    trainer = Trainer(dit, cfg, adapter, acc)
    out = Path(cfg.output_dir)
    if (out / "checkpoint" / "state.pt").is_file():
        trainer.load(out / "checkpoint")
        log.info("resumed at step %d", trainer.step)
    log_file = out / "log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    vae = None
    board = _tensorboard(out) if acc.is_main_process else None
    per_epoch = len(epoch_batches(data, cfg.batch_size, cfg.seed, 0))
    if not per_epoch:
        raise ValueError(f"no batch of {cfg.batch_size} clips of one aspect ratio in {cache_dir}")
    started = time.perf_counter()
    batches, batches_epoch = [], -1  # drawn once per epoch: per step it cost 3 ms, 4% of a miniature step
    while trainer.step < cfg.steps:
        epoch, position = divmod(trainer.data_position, per_epoch)
        if epoch != batches_epoch:
            batches, batches_epoch = epoch_batches(data, cfg.batch_size, cfg.seed, epoch), epoch
        indices = batches[position]
        loss = trainer.train_step(_batch(data, indices, trainer.data_rank, trainer.data_size))
        trainer.data_position += 1
        if acc.is_main_process:
            record = {"step": trainer.step, "loss": loss, "lr": trainer.scheduler.get_last_lr()[0],
                      "seconds": round(time.perf_counter() - started, 2)}
            with open(log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            if board is not None:
                board.add_scalar("loss", loss, trainer.step)
                board.add_scalar("lr", record["lr"], trainer.step)
            print(f"\rstep {trainer.step}/{cfg.steps} loss {loss:.4f}", end="", flush=True)
        if cfg.save_every and trainer.step % cfg.save_every == 0:
            trainer.save(out / "checkpoint")
        if cfg.validate_every and trainer.step % cfg.validate_every == 0 and (
                acc.is_main_process or is_sharded(acc) or trainer.parallel is not None):
            if vae is None and vae_path and acc.is_main_process:
                vae = load(vae_path, "vae", acc.device, torch.float32).model
            result = _validate(trainer, data, out, vae)
            if result is not None:
                with open(log_file, "a") as f:
                    f.write(json.dumps(result) + "\n")
    if acc.is_main_process:
        print()
    trainer.save(out / "checkpoint")
    exported = trainer.export(out / "export")
    if accelerator is None and acc.num_processes > 1:
        # A process that exits with the process group alive can abort in the teardown of its threads ("terminate
        # called without an active exception", SIGABRT: a finished run reported as failed); end it once all are done.
        acc.wait_for_everyone()
        acc.end_training()
    return exported
