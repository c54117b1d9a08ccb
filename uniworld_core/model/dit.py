"""The Wan2.1 diffusion transformer, with the FlashI2V additions.

Per block: adaLN-modulated self-attention (3-D RoPE, RMS qk-norm over all
heads) -> LayerNorm + cross-attention to the context -> modulated GELU(tanh)
FFN. One shared time MLP produces 6 modulation vectors, each block adds its
own learned `modulation` [1, 6, dim]. Parameter names are the official ones,
so official checkpoints load with `load_state_dict(strict=True)`.

Precision: the residual stream, norms, modulation and time embedding run in
float32 (as the official code keeps them); linear layers run in their weight
dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..device import float64_supported
from ..errors import InputError
from ..quant.layers import compute_dtype_of, weight_of
from .attention import AttentionFn, sdpa_attention
from .config import DiTConfig
from .flashi2v import LearnableProj, fourier_embedding
from .rope import apply_rope, rope_tables


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Run a linear layer in its compute dtype (its weight dtype unless quantised)."""
    return layer(x.to(compute_dtype_of(layer)))


def _linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Run a linear layer in float32 whatever its storage dtype."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), weight_of(layer, torch.float32), bias)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal [cos | sin] embedding of timesteps in [0, 1000], in float64 where supported."""
    half = dim // 2
    wide = torch.float64 if float64_supported(t.device) else torch.float32
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=wide, device=t.device) / half)
    angles = torch.outer(t.detach().to(wide), freqs)
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


def modulated(modulation: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A learned modulation [1, n, dim] plus time terms, split into its n vectors (fp32).

    e is [B, n, dim] (one timestep per sample: each vector is [B, 1, dim]) or [B, L, n, dim]
    (a timestep per token, as continuation gives clean context frames t = 0: each is [B, L, dim]).
    """
    if e.ndim == 3:
        return (modulation.float() + e).chunk(modulation.shape[1], dim=1)
    return tuple(v.squeeze(2) for v in (modulation.float().unsqueeze(1) + e).chunk(modulation.shape[1], dim=2))


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32 (Wan's qk-norm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the mean square from a norm (one reduction, no x**2 tensor); x * weight promotes a bf16 x to
        # float32 in the same pass, and the in-place rescale needs no further copy
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
        return (x * self.weight.float()).mul_(torch.rsqrt(norm.square() / x.shape[-1] + self.eps))


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (affine only where the checkpoint has weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


class Attention(nn.Module):
    """Multi-head attention with q/k/v/o projections and RMS qk-norm (self or cross)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, attention: AttentionFn,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x.to(compute_dtype_of(self.q))  # once for q, k and v
        source = x if context is None else context
        q = self.norm_q(_linear(self.q, x)).unflatten(-1, (self.num_heads, -1))  # [B, L, H, D]
        k = self.norm_k(_linear(self.k, source)).unflatten(-1, (self.num_heads, -1))
        v = _linear(self.v, source).unflatten(-1, (self.num_heads, -1))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attention(q.to(v.dtype), k.to(v.dtype), v)
        return _linear(self.o, out.flatten(2))


class WanBlock(nn.Module):
    """One DiT block: modulated self-attention, cross-attention, modulated FFN."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = Attention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm3 = (LayerNorm(dim, cfg.eps, elementwise_affine=True)
                      if cfg.cross_attn_norm else nn.Identity())
        self.cross_attn = Attention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm2 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, context: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor], attention: AttentionFn,
                self_attention: AttentionFn | None = None) -> torch.Tensor:
        # x [B, L, dim] fp32; e [B, 6, dim] fp32 (or [B, L, 6, dim] per token): shift/scale/gate for
        # attention, then FFN.
        # self_attention: the self-attention kernel when it differs from the cross-attention one
        # (sequence parallelism: the tokens of x are a share, the context is whole).
        shift1, scale1, gate1, shift2, scale2, gate2 = modulated(self.modulation, e)
        y = self.self_attn(modulate(self.norm1(x), shift1, scale1), None, self_attention or attention, rope)
        x = torch.addcmul(x, y, gate1)  # x + y * gate, in float32 (y is promoted)
        x = x + self.cross_attn(self.norm3(x), context, attention)
        y = _linear(self.ffn[2], self.ffn[1](_linear(self.ffn[0], modulate(self.norm2(x), shift2, scale2))))
        return torch.addcmul(x, y, gate2)


def modulate(normed: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: normed * (1 + scale) + shift, in one fused pass."""
    return torch.addcmul(shift, normed, 1 + scale)


class Head(nn.Module):
    """Modulated LayerNorm + linear to patch pixels."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = modulated(self.modulation, e.unsqueeze(-2))
        return _linear(self.head, modulate(self.norm(x), shift, scale)).float()


class WanDiT(nn.Module):
    """Wan2.1 DiT; with `cfg.flashi2v`, also FlashI2V's `fourier_embedding` and `learnable_proj`."""

    def __init__(self, cfg: DiTConfig, attention: AttentionFn = sdpa_attention):
        super().__init__()
        self.cfg = cfg
        self.attention = attention
        self.gradient_checkpointing = False
        # Set by uniworld_core.parallel to run on a share of the tokens (split/gather); None: all tokens here.
        self.sequence_parallel = None
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim),
                                            nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(),
                                            nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        if cfg.flashi2v:
            self.fourier_embedding = fourier_embedding(cfg.in_dim, dim, cfg.patch_size)
            self.learnable_proj = LearnableProj(cfg.in_dim, cfg.proj_kernel_t)
        self.init_weights()

    def init_weights(self) -> None:
        """Wan-style init for the base model (FlashI2V modules init themselves)."""
        for module in [self.text_embedding, self.time_embedding, self.time_projection,
                       self.blocks, self.head]:
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for layer in (self.text_embedding[0], self.text_embedding[2],
                      self.time_embedding[0], self.time_embedding[2]):
            nn.init.normal_(layer.weight, std=0.02)

    def check_inputs(self, x: torch.Tensor, context: torch.Tensor,
                     fourier_features: torch.Tensor | None) -> None:
        """Raise InputError for latents/context/features this model cannot take."""
        cfg = self.cfg
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise InputError(f"latents of shape {tuple(x.shape)}",
                             f"[batch, {cfg.in_dim}, frames, height, width] Wan latents",
                             "Encode frames with the Wan2.1 VAE (16 latent channels).")
        _, pt, ph, pw = (None, *cfg.patch_size)
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise InputError(f"a latent grid of {tuple(x.shape[2:])}",
                             f"frames/height/width divisible by the patch size {cfg.patch_size}",
                             "Use a width and height that are multiples of 16 pixels.")
        self.check_context(context, x.shape[0])
        if cfg.flashi2v and (fourier_features is None or fourier_features.shape != x.shape):
            found = None if fourier_features is None else tuple(fourier_features.shape)
            raise InputError(f"Fourier features {found}", f"a tensor of shape {tuple(x.shape)}",
                             "Compute them with uniworld_core.model.fourier.fourier_features.")

    def check_context(self, context: torch.Tensor, batch: int) -> None:
        """Raise InputError unless context is [batch, tokens, text_dim]."""
        width = self.cfg.text_dim
        if context.ndim != 3 or context.shape[0] != batch or context.shape[-1] != width:
            raise InputError(f"context of shape {tuple(context.shape)}",
                             f"[{batch}, tokens, {width}] features for this model",
                             "Use the text encoder / VLM adapter that matches this DiT.")

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                fourier_features: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity for latents x [B, C, F, H, W] at timesteps t [B] (sigma*1000), or t [B, F] per frame.

        context: [B, L, text_dim] text/VLM features (before `text_embedding`).
        fourier_features: [B, C, F, H, W] high-frequency features (FlashI2V only).
        """
        self.check_inputs(x, context, fourier_features)
        dtype = self.patch_embedding.weight.dtype
        tokens = self.patch_embedding(x.to(dtype))
        if self.cfg.flashi2v:
            tokens = tokens + self.fourier_embedding(fourier_features.to(dtype))
        grid = tuple(tokens.shape[2:])
        # [B, L, dim], contiguous: a transposed view would make every residual op strided (and slow)
        tokens = tokens.flatten(2).transpose(1, 2).float().contiguous()

        e, e0 = self.time_terms(t, x.shape[0], grid)
        context = _linear(self.text_embedding[2], self.text_embedding[1](
            _linear(self.text_embedding[0], context)))
        rope = rope_tables(grid, self.cfg.head_dim, x.device)
        self_attention, length = self.attention, tokens.shape[1]
        if self.sequence_parallel is not None:  # this process keeps its share of the tokens
            tokens, rope, self_attention = self.sequence_parallel.split(tokens, rope, self.attention)
            if t.ndim == 2:  # per-token time terms follow their tokens
                e, e0 = self.sequence_parallel.share(e), self.sequence_parallel.share(e0)

        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, e0, context, rope, self.attention, self_attention,
                                    use_reentrant=False)
            else:
                tokens = block(tokens, e0, context, rope, self.attention, self_attention)
        out = self.head(tokens, e)
        if self.sequence_parallel is not None:
            out = self.sequence_parallel.gather(out, length)
        return self.unpatchify(out, grid)

    def time_terms(self, t: torch.Tensor, batch: int, grid: tuple[int, int, int]):
        """(e, e0): the time embedding and its 6 modulation terms.

        t [B] (or a scalar): one timestep per sample, e [B, dim] and e0 [B, 6, dim], the
        official path. t [B, F] with F the latent frames: a timestep per frame (continuation:
        context frames at 0, new frames at the sampling time), e [B, L, dim] and e0
        [B, L, 6, dim] for the L tokens (each frame's tokens share its terms).
        """
        per_frame = t.ndim == 2
        flat = t.reshape(-1) if per_frame else t.reshape(-1).expand(batch)
        e = _linear_fp32(self.time_embedding[2], F.silu(
            _linear_fp32(self.time_embedding[0], timestep_embedding(flat, self.cfg.freq_dim))))
        e0 = _linear_fp32(self.time_projection[1], F.silu(e)).unflatten(1, (6, self.cfg.dim))
        if not per_frame:
            return e, e0
        if t.shape != (batch, grid[0]):
            raise InputError(f"per-frame timesteps of shape {tuple(t.shape)}",
                             f"[{batch}, {grid[0]}]: one per latent frame")
        tokens_per_frame = grid[1] * grid[2]
        e = e.unflatten(0, (batch, grid[0])).repeat_interleave(tokens_per_frame, dim=1)  # [B, L, dim]
        e0 = e0.unflatten(0, (batch, grid[0])).repeat_interleave(tokens_per_frame, dim=1)  # [B, L, 6, dim]
        return e, e0

    def project_start(self, start: torch.Tensor) -> torch.Tensor:
        """FlashI2V latent shifting: the condition latent [B, 16, 1, H, W] through `learnable_proj` (fp32).

        A method of the model rather than a direct `learnable_proj` call so that wrappers which only
        see the model's methods (FSDP's hooks) take part.
        """
        return self.learnable_proj(start)

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, L, pt*ph*pw*C] -> [B, C, F*pt, H*ph, W*pw]."""
        (f, h, w), (pt, ph, pw) = grid, self.cfg.patch_size
        x = tokens.reshape(tokens.shape[0], f, h, w, pt, ph, pw, self.cfg.out_dim)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(tokens.shape[0], self.cfg.out_dim, f * pt, h * ph, w * pw)
