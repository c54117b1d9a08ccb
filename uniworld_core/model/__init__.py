"""The networks, one module per component of the paper.

`config` (sizes, inferred from tensor shapes), `dit` (the Wan2.1 DiT) with
`attention` and `rope`, `compile` (regional torch.compile of the DiT block),
`flashi2v` (learnable_proj, fourier_embedding, latent shifting), `fourier`
(high-frequency guidance features), `vae` / `vae_blocks` (the Wan2.1 causal
VAE) and `adapter` (Qwen2.5-VL -> DiT context). May import `quant` and the
top-level basics; never weights, memory or anything above.
"""

from .adapter import DIT_TEXT_DIM, EncoderAdapter
from .attention import available_backends, bf16_score_attention, chunked_attention, get_attention, sdpa_attention
from .compile import CompileState, compile_blocks, graph_breaks, uncompile_blocks
from .config import DIT_PRESETS, VAE_PRESETS, DiTConfig, VAEConfig
from .dit import WanDiT
from .fourier import TRAINING_FOURIER_RATIOS, high_frequency, sample_fourier_ratio
from .rope import rope_tables
from .vae import WanVAE
from .vae_blocks import AttentionBlock, Resample, ResidualBlock

__all__ = [
    "EncoderAdapter", "available_backends", "get_attention", "sdpa_attention", "chunked_attention",
    "bf16_score_attention", "CompileState", "compile_blocks", "uncompile_blocks", "graph_breaks", "rope_tables",
    "DIT_PRESETS", "VAE_PRESETS",
    "DiTConfig", "VAEConfig", "WanDiT", "high_frequency", "WanVAE", "AttentionBlock", "Resample",
    "ResidualBlock", "DIT_TEXT_DIM", "TRAINING_FOURIER_RATIOS", "sample_fourier_ratio",
]
