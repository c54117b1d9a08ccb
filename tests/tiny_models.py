"""The tiny DiT the tests share (no pytest import, so scripts run with another Python can use it too)."""

from __future__ import annotations

import torch

from uniworld_core.model import DiTConfig, WanDiT

# Real Wan DiTs have 128-wide heads, which is how a file's head count is inferred.
CFG = DiTConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=2, freq_dim=32, text_dim=20, text_len=512)


def tiny_dit(seed: int = 0, cfg: DiTConfig = CFG) -> WanDiT:
    torch.manual_seed(seed)
    model = WanDiT(cfg).eval()
    with torch.no_grad():  # wake the zero-initialised FlashI2V outputs
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def dit_inputs(cfg: DiTConfig = CFG):
    gen = torch.Generator().manual_seed(1)
    _, ph, pw = cfg.patch_size
    x, ff = torch.randn(2, 1, cfg.in_dim, 2, 2 * ph, 3 * pw, generator=gen)  # 2x3 tokens a frame
    return x, torch.tensor([321.0]), torch.randn(1, 5, cfg.text_dim, generator=gen), ff


def dit_out(model) -> torch.Tensor:
    with torch.no_grad():
        return model(*dit_inputs(model.cfg))
