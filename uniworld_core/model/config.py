"""Model configurations: presets and inference from a state dict's shapes.

Shapes, not file names, decide what a checkpoint is: a dim of 5120 is the 14B
DiT whatever the file is called.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import torch

from ..errors import CheckpointError

# Wan2.1 uses 128-wide attention heads at every released size.
WAN_HEAD_DIM = 128


@dataclass(frozen=True)
class DiTConfig:
    """Hyper-parameters of the Wan2.1 DiT, optionally with FlashI2V modules."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    in_dim: int = 16
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    flashi2v: bool = True  # fourier_embedding + learnable_proj present
    proj_kernel_t: int = 1  # learnable_proj temporal kernel: 1 (1x3x3) or 3 (3x3x3)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping) -> DiTConfig:
        """Build from a (possibly partial) dict, e.g. reference-file metadata."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "patch_size" in known:
            known["patch_size"] = tuple(known["patch_size"])
        return cls(**known)


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of the Wan2.1 3-D causal VAE."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @classmethod
    def from_dict(cls, values: Mapping) -> VAEConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("dim_mult", "temporal_downsample"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


DIT_PRESETS: dict[str, DiTConfig] = {
    # Small enough for tests and the CPU demo; same code paths as the real sizes.
    "tiny": DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, freq_dim=32,
                      text_dim=32, text_len=16),
    "1.3B": DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "14B": DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
}

VAE_PRESETS: dict[str, VAEConfig] = {
    "tiny": VAEConfig(base_dim=8),
    "wan2.1": VAEConfig(),
}


def dit_preset(name: str, **overrides) -> DiTConfig:
    """A named DiT preset (`tiny`, `1.3B`, `14B`), optionally with overrides."""
    if name not in DIT_PRESETS:
        raise KeyError(f"unknown DiT preset {name!r}; choose one of {sorted(DIT_PRESETS)}")
    return replace(DIT_PRESETS[name], **overrides)


def _require(state: Mapping[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(
            f"the weights have no '{key}' tensor", f"a {what} in official key layout",
            "Check that the file is the right model (see `python -m uniworld_core inspect`).")
    return state[key]


def _vote(state: Mapping[str, torch.Tensor], pattern: str, axis: int, fallback: int) -> int:
    """The size most tensors matching `pattern` agree on along `axis` (one damaged tensor cannot decide it)."""
    rule = re.compile(pattern)
    sizes = [int(v.shape[axis]) for k, v in state.items() if rule.fullmatch(k) and v.ndim > axis]
    return Counter(sizes).most_common(1)[0][0] if sizes else fallback


def infer_dit_config(state: Mapping[str, torch.Tensor], num_heads: int | None = None,
                     text_len: int | None = None) -> DiTConfig:
    """Infer a DiTConfig from an official-layout state dict.

    Sizes that many tensors share (width, FFN width) are taken by majority, so a
    single damaged tensor is reported as the one that disagrees. The head count
    and the nominal text length are not visible in the shapes; they default to
    the preset of the same width, else to Wan's 128-wide heads and 512 tokens.
    """
    patch = _require(state, "patch_embedding.weight", "Wan DiT")
    in_dim = patch.shape[1]
    dim = _vote(state, r"patch_embedding\.weight|blocks\.\d+\.(self|cross)_attn\.[qkvo]\.weight", 0,
                int(patch.shape[0]))
    patch_size = tuple(int(s) for s in patch.shape[2:])
    num_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    head = _require(state, "head.head.weight", "Wan DiT")
    preset = next((c for c in DIT_PRESETS.values() if c.dim == dim), None)
    if num_heads is None:
        num_heads = preset.num_heads if preset else dim // WAN_HEAD_DIM
    if text_len is None:
        text_len = preset.text_len if preset else DiTConfig.text_len
    if num_heads <= 0 or dim % num_heads:
        raise CheckpointError(f"width {dim} cannot be split into {num_heads} heads",
                              "a width divisible by the head count", "Pass num_heads explicitly.")
    proj = state.get("learnable_proj.proj.0.weight")
    return DiTConfig(
        dim=int(dim), in_dim=int(in_dim), patch_size=patch_size, num_layers=num_layers,
        ffn_dim=_vote(state, r"blocks\.\d+\.ffn\.0\.weight", 0,
                      int(_require(state, "blocks.0.ffn.0.weight", "Wan DiT").shape[0])),
        num_heads=int(num_heads),
        freq_dim=int(_require(state, "time_embedding.0.weight", "Wan DiT").shape[1]),
        text_dim=int(_require(state, "text_embedding.0.weight", "Wan DiT").shape[1]),
        text_len=text_len,
        out_dim=int(head.shape[0]) // math.prod(patch_size),
        qk_norm="blocks.0.self_attn.norm_q.weight" in state,
        cross_attn_norm="blocks.0.norm3.weight" in state,
        flashi2v="fourier_embedding.0.weight" in state,
        proj_kernel_t=int(proj.shape[2]) if proj is not None else 1,
    )


def infer_vae_config(state: Mapping[str, torch.Tensor]) -> VAEConfig:
    """Infer a VAEConfig from an official-layout Wan VAE state dict."""
    base_dim = int(_require(state, "encoder.conv1.weight", "Wan VAE").shape[0])
    z_dim = int(_require(state, "conv2.weight", "Wan VAE").shape[0])
    # Encoder stages end with a Resample (which owns `resample.1`), except the last.
    down = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.downsamples.")})
    resample_idx = sorted({int(k.split(".")[2]) for k in state
                           if k.startswith("encoder.downsamples.") and ".resample." in k})
    num_stages = len(resample_idx) + 1
    num_res_blocks = (len(down) - len(resample_idx)) // num_stages
    dims = [int(state[f"encoder.downsamples.{i}.resample.1.weight"].shape[0])
            for i in resample_idx] + [int(state["encoder.head.2.weight"].shape[1])]
    temporal = tuple(f"encoder.downsamples.{i}.time_conv.weight" in state for i in resample_idx)
    return VAEConfig(base_dim=base_dim, z_dim=z_dim,
                     dim_mult=tuple(d // base_dim for d in dims),
                     num_res_blocks=num_res_blocks, temporal_downsample=temporal)


__all__ = ["DiTConfig", "VAEConfig", "DIT_PRESETS", "VAE_PRESETS", "dit_preset",
           "infer_dit_config", "infer_vae_config"]
