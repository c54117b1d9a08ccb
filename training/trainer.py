"""The training loop: trainable sets, AdamW, schedule, clipping, EMA, exact checkpoints.

Runs as a plain loop on one device, and under `accelerate launch` on several:
with DDP every process holds the whole model and gradients are averaged; with
accelerate's FSDP plugin the DiT is sharded by accelerate's FSDP2 preparation
before the optimizer is built (training.sharding). No home-made distributed code.
Checkpoints and exports are collective calls: every process calls them, the
main process writes.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from uniworld_core.device import device_rng_states, set_device_rng_states
from uniworld_core.model import WanDiT
from uniworld_core.parallel import before_process_group, install_sequence_parallel, join
from uniworld_core.sampling import SamplerSettings, sample
from uniworld_core.weights import CONTINUATION_KEY

from .config import TrainConfig
from .lora_train import LoraSet
from .objective import ObjectiveConfig, draw, flashi2v_loss
from .sharding import (
    is_shard,
    is_sharded,
    local_optimizer_state,
    restore_optimizer_state,
    shard_like,
    shard_model,
    whole,
)

# Accelerator() starts the process group (here, in training.run or in a caller's script after this import);
# anything imported after it must not pin the group, or a finished multi-process run can abort at exit.
before_process_group()


def trainable_parameters(mode: str, dit: WanDiT, adapter: nn.Module | None,
                         lora: LoraSet | None) -> dict[str, nn.Parameter]:
    """The parameters each mode trains; everything else is frozen."""
    for p in dit.parameters():
        p.requires_grad_(False)
    if adapter is not None:
        for p in adapter.parameters():
            p.requires_grad_(False)
    if mode == "adapter":
        if adapter is None:
            raise ValueError("mode 'adapter' needs an adapter (VLM features in the data)")
        chosen = {f"adapter.{n}": p for n, p in adapter.named_parameters()}
    elif mode == "flashi2v":
        chosen = {n: p for n, p in dit.named_parameters() if n.startswith(("fourier_embedding", "learnable_proj"))}
    elif mode == "lora":
        chosen = {f"lora.{n}": p for n, p in lora.named_parameters()}
    elif mode == "all":  # training from scratch: the DiT and the adapter together
        if adapter is None:
            raise ValueError("mode 'all' needs an adapter")
        chosen = {**dict(dit.named_parameters()), **{f"adapter.{n}": p for n, p in adapter.named_parameters()}}
    else:
        chosen = dict(dit.named_parameters())
    for p in chosen.values():
        p.requires_grad_(True)
    return chosen


class EMA:
    """Exponential moving average of the trainable parameters (float32 shadows)."""

    def __init__(self, params: dict[str, nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, nn.Parameter]) -> None:
        for name, p in params.items():
            self.shadow[name].lerp_(p.detach().float(), 1 - self.decay)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


class Trainer:
    """Trains on batches of cached tensors: latents, conditioning features and the empty prompt's."""

    def __init__(self, dit: WanDiT, cfg: TrainConfig, adapter: nn.Module | None = None, accelerator=None):
        from accelerate import Accelerator

        self.cfg, self.dit, self.adapter = cfg, dit, adapter
        self.accelerator = accelerator or Accelerator(mixed_precision=cfg.mixed_precision, cpu=not (
            torch.cuda.is_available()))
        self.lora = LoraSet(dit, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout) if cfg.mode == "lora" else None
        dit.gradient_checkpointing = cfg.gradient_checkpointing
        self.parallel = self._sequence_parallel(dit, cfg.sequence_parallel)
        sharded = is_sharded(self.accelerator)
        if sharded:
            if self.accelerator.mixed_precision == "fp16":
                raise ValueError("mixed_precision 'fp16' is not supported with FSDP: use 'bf16'")
            self.dit = dit = shard_model(self.accelerator, dit)
        self.params = trainable_parameters(cfg.mode, dit, adapter, self.lora)
        optimizer = torch.optim.AdamW(list(self.params.values()), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                      weight_decay=cfg.weight_decay)
        # accelerate's optimizer wrapper brings the fp16 loss scaler; under FSDP2 it would insist on
        # re-mapping parameters that live outside the DiT (LoRA, adapter), and bf16 needs no scaler.
        self.optimizer = optimizer if sharded else self.accelerator.prepare(optimizer)
        # Not prepared: accelerate's scheduler wrapper steps once per process, and one step here is
        # one step of the global batch (split across processes by the caller).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
        self.ema = EMA(self.params, cfg.ema_decay)
        self.objective = ObjectiveConfig(text_drop=cfg.text_drop, shift=cfg.shift, fourier_range=cfg.fourier_range,
                                         continuation=cfg.continuation, max_context=cfg.max_context,
                                         context_noise=cfg.context_noise, region_weight=cfg.region_weight,
                                         context_estimate=cfg.context_estimate, window=cfg.window)
        # the same stream on every process: each draws the global batch and keeps its part
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.data_position = 0

    def _sequence_parallel(self, dit: WanDiT, size: int):
        """Split every sample's tokens over groups of `size` processes (the DiT's hook), or None for 1.

        The processes of one group train on the same samples, so the batch is split `data_size` ways.
        """
        if size == 1:
            return None
        if self.accelerator.num_processes % size:
            raise ValueError(f"sequence_parallel {size} does not divide the {self.accelerator.num_processes} "
                             "processes")
        parallel = join(size, self.accelerator.device)
        install_sequence_parallel(dit, parallel)
        return parallel

    @property
    def data_rank(self) -> int:
        """Which share of the batch this process trains on (processes of one sequence group share one)."""
        return self.accelerator.process_index if self.parallel is None else self.parallel.data_rank

    @property
    def data_size(self) -> int:
        """How many shares the batch is split into."""
        return self.accelerator.num_processes if self.parallel is None else self.parallel.data

    def _context(self, features: torch.Tensor) -> torch.Tensor:
        return self.adapter(features) if self.adapter is not None else features

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimisation step on this process's part of the batch.

        {latents, features, empty_features} and optionally start_latents (the condition image's latent
        when it is not the clip's first frame) and loss_mask (the cells `region_weight` weights).
        """
        device, acc = self.accelerator.device, self.accelerator
        local = batch["latents"].shape[0]
        shape = (local * self.data_size, *batch["latents"].shape[1:])
        part = slice(self.data_rank * local, (self.data_rank + 1) * local)
        draws = draw(shape, self.objective, self.generator, part)
        with acc.autocast():
            context = self._context(batch["features"].to(device))
            empty = self._context(batch["empty_features"].to(device))
            start = batch.get("start_latents")
            loss = flashi2v_loss(self.dit, batch["latents"].to(device), context, empty, self.objective,
                                 draws=draws, start=start, mask=batch.get("loss_mask"))
        acc.backward(loss)
        # The mean over processes is the gradient of the global batch's mean loss. With sequence parallelism
        # too: the S processes of a group each return S times their share of it (uniworld_core.parallel.comm).
        if acc.num_processes > 1:
            for p in self.params.values():
                if not is_shard(p):  # FSDP has already averaged the shards' gradients
                    p.grad = acc.reduce(p.grad if p.grad is not None else torch.zeros_like(p), reduction="mean")
        if self.cfg.grad_clip:
            self.accelerator.clip_grad_norm_(list(self.params.values()), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.params)
        self.step += 1
        return float(loss.detach())

    @contextmanager
    def ema_weights(self):
        """The trainable parameters replaced by their EMA inside the block (for validation)."""
        saved = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.ema.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(saved[name])

    @torch.no_grad()
    def validate(self, clip: dict[str, torch.Tensor], empty: torch.Tensor, steps: int = 8,
                 seed: int = 0) -> tuple[torch.Tensor, float]:
        """A clip sampled from a held-out first frame with the EMA weights, and its fixed-draw loss."""
        device = self.accelerator.device
        latents = clip["latents"][None].to(device)
        start = clip["start_latents"][None].to(device) if "start_latents" in clip else latents[:, :, :1]
        with self.ema_weights():
            context = self._context(clip["features"][None].to(device))
            negative = self._context(empty[None].to(device))
            gen = torch.Generator().manual_seed(seed)
            objective = ObjectiveConfig(text_drop=0.0, shift=self.objective.shift)
            loss = float(flashi2v_loss(self.dit, latents, context, negative, objective, gen, start=start))
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed)).to(device)
            sampled = sample(self.dit, noise, start, context, negative,
                             SamplerSettings(steps=steps, guidance_scale=5.0))
        return sampled, loss

    # ---- checkpoints: everything needed to continue exactly. Collective calls (see the module docstring).

    def _optimizer_params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def save(self, folder: str | Path) -> Path:
        """Weights, EMA, optimizer, schedule, RNG states and data position; resumable bit for bit.

        Under FSDP each process also writes its optimizer shard (`state_rank<k>.pt`).
        """
        folder, acc = Path(folder), self.accelerator
        sharded = is_sharded(acc)
        trainable = {n: whole(p.detach()).float().cpu().contiguous() for n, p in self.params.items()}
        ema = {n: whole(t).cpu().contiguous() for n, t in self.ema.shadow.items()}
        optimizer = self.optimizer.state_dict()
        state = {"optimizer": local_optimizer_state(optimizer) if sharded else optimizer,
                 "scheduler": self.scheduler.state_dict(), "processes": acc.num_processes, "sharded": sharded,
                 "step": self.step, "data_position": self.data_position,
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                 "numpy_rng": _numpy_rng(), "python_rng": _python_rng_tensor(),
                 "device_rng": device_rng_states()}
        if acc.is_main_process or sharded:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(state, folder / _state_file(acc.process_index))
        if acc.is_main_process:
            save_file(trainable, str(folder / "trainable.safetensors"))
            save_file(ema, str(folder / "ema.safetensors"))
        acc.wait_for_everyone()
        return folder

    def load(self, folder: str | Path) -> None:
        folder, acc = Path(folder), self.accelerator
        sharded = is_sharded(acc)
        path = folder / _state_file(acc.process_index if sharded else 0)
        if not path.is_file():
            raise ValueError(f"{path} is missing: a sharded (FSDP) checkpoint resumes with the number of "
                             "processes that saved it")
        state = torch.load(path, weights_only=True)
        saved = int(state.get("processes", 1))
        if (sharded or bool(state.get("sharded"))) and (saved != acc.num_processes or not sharded):
            raise ValueError(f"{folder} holds FSDP optimizer shards of {saved} processes; resume it under FSDP "
                             f"with {saved} processes (this run: {acc.num_processes}, FSDP {sharded})")
        trained = load_file(str(folder / "trainable.safetensors"))
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(shard_like(trained[name], p))
        ema = load_file(str(folder / "ema.safetensors"))
        self.ema.shadow = {n: shard_like(t.float(), self.ema.shadow[n]) for n, t in ema.items()}
        optimizer = state["optimizer"]
        self.optimizer.load_state_dict(restore_optimizer_state(optimizer, self._optimizer_params())
                                       if sharded else optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.data_position = int(state["step"]), int(state["data_position"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        keys, pos, has_gauss, gauss = state["numpy_rng"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
        random.setstate(_python_rng_state(state["python_rng"]))
        set_device_rng_states(state.get("device_rng", {}))

    # ---- exports in the formats our loaders and ComfyUI read

    def export(self, folder: str | Path, use_ema: bool = True) -> Path:
        folder, acc = Path(folder), self.accelerator
        weights = {n: whole(t).float() for n, t in (self.ema.shadow if use_ema else
                                                    {n: p.detach() for n, p in self.params.items()}).items()}
        if self.cfg.mode == "lora":
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(weights[name])
            if _writer(acc, folder):
                self.lora.export(folder / "lora.safetensors")
            return folder / "lora.safetensors"
        if self.cfg.mode == "adapter":
            if _writer(acc, folder):
                save_file({n.removeprefix("adapter."): t.cpu().contiguous() for n, t in weights.items()},
                          str(folder / "adapter.safetensors"))
            return folder / "adapter.safetensors"
        state = {n: whole(p.detach()).float().cpu().contiguous() for n, p in self.dit.state_dict().items()}
        state.update({n: t.cpu().contiguous() for n, t in weights.items() if not n.startswith("adapter.")})
        adapter = {n.removeprefix("adapter."): t.cpu().contiguous() for n, t in weights.items()
                   if n.startswith("adapter.")}
        if _writer(acc, folder):
            metadata = {"dit_config": self.dit.cfg.to_json()}
            if self.cfg.continuation > 0:  # `generate --continuation auto` reads it
                metadata[CONTINUATION_KEY] = "true"
            save_file(state, str(folder / "dit.safetensors"), metadata=metadata)
            if adapter:
                save_file(adapter, str(folder / "adapter.safetensors"))
        return folder / "dit.safetensors"


def _state_file(process: int) -> str:
    return "state.pt" if process == 0 else f"state_rank{process}.pt"


def _writer(accelerator, folder: Path) -> bool:
    """True on the process that writes files (the main one), after making the folder."""
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
    return accelerator.is_main_process


def _numpy_rng() -> tuple:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss


def _python_rng_tensor() -> torch.Tensor:
    version, state, gauss = random.getstate()
    return torch.tensor(list(state), dtype=torch.int64)


def _python_rng_state(tensor: torch.Tensor):
    return (3, tuple(int(v) for v in tensor.tolist()), None)
