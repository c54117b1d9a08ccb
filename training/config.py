"""Training configuration, validated with errors that name the field."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MODES = ("adapter", "flashi2v", "lora", "full", "all")


class ConfigError(ValueError):
    """An invalid training setting, naming the field."""


@dataclass
class TrainConfig:
    mode: str = "lora"  # adapter (OSP2.0 recipe) | flashi2v (its modules) | lora | full | all (DiT + adapter)
    steps: int = 1000
    batch_size: int = 1
    lr: float = 2e-5
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-15
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    text_drop: float = 0.1
    shift: float | None = None  # training time shift; None = resolution-dependent (official)
    fourier_range: tuple[float, float] = (0.05, 0.95)  # Fourier ratio ~ U[lo, hi] (official; inference: 0.1)
    continuation: float = 0.0  # share of batches trained to continue clean context frames (long videos)
    max_context: int = 4  # most context latent frames a continuation batch sees
    context_noise: float = 0.0  # continuation: corrupt the context by up to this share of noise (0 = clean)
    context_estimate: float = 0.0  # continuation: the context as the DiT's own estimate from up to this noise
    window: int = 0  # latent frames per training window on longer clips (0 = whole clips; training.objective)
    region_weight: float = 0.0  # extra loss weight of the cells a cached `loss_mask` marks (0 = off)
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # no | bf16 | fp16
    sequence_parallel: int = 1  # processes that split one sample's tokens (Ulysses); the rest split the batch
    seed: int = 0
    save_every: int = 0
    validate_every: int = 0  # 0 = off; else sample a clip from the first cached clip's frame every N steps
    validation_steps: int = 8
    output_dir: str = "train_output"

    def __post_init__(self):
        self.betas = tuple(self.betas)
        self.fourier_range = tuple(self.fourier_range)
        checks = [
            ("mode", self.mode in MODES, f"one of {MODES}"),
            ("steps", self.steps >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", self.lr > 0, "positive"),
            ("weight_decay", self.weight_decay >= 0, "non-negative"),
            ("warmup_steps", 0 <= self.warmup_steps, "non-negative"),
            ("schedule", self.schedule in ("constant", "cosine"), "constant or cosine"),
            ("grad_clip", self.grad_clip >= 0, "non-negative (0 = off)"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
            ("text_drop", 0 <= self.text_drop <= 1, "in [0, 1]"),
            ("shift", self.shift is None or self.shift > 0, "positive, or null for the resolution-dependent shift"),
            ("fourier_range", len(self.fourier_range) == 2 and 0 < self.fourier_range[0] <= self.fourier_range[1] < 1,
             "[low, high] with 0 < low <= high < 1"),
            ("continuation", 0 <= self.continuation <= 1, "in [0, 1] (the share of continuation batches)"),
            ("max_context", self.max_context >= 1, "at least 1 latent frame"),
            ("context_noise", 0 <= self.context_noise < 1, "in [0, 1)"),
            ("context_estimate", 0 <= self.context_estimate < 1, "in [0, 1) (0 = off)"),
            ("window", self.window == 0 or self.window >= 2, "0 (whole clips) or at least 2 latent frames"),
            ("region_weight", self.region_weight >= 0, "non-negative (0 = off)"),
            ("lora_rank", self.lora_rank >= 1, "at least 1"),
            ("mixed_precision", self.mixed_precision in ("no", "bf16", "fp16"), "no, bf16 or fp16"),
            ("sequence_parallel", self.sequence_parallel >= 1, "at least 1 (1 = off)"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"training setting '{name}' is {getattr(self, name)!r}; expected {expected}")

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        values = json.loads(Path(path).read_text())
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown training setting(s) {sorted(unknown)} in {path}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)
