"""Training the Wan2.1 VAE architecture (e.g. at a small width, on the toy world's frames).

Loss: L1 reconstruction of the clip plus a small KL term on the posterior,
the clip going through the encoder and decoder chunk by chunk as at
inference (the causal cache passes values between chunks, not gradients).
Afterwards the per-channel latent mean and std are measured on the data and
stored with the weights, so the DiT sees normalised latents as with Wan2.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from uniworld_core.vae import WanVAE


@dataclass
class VAETrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    kl_weight: float = 1e-6
    batch_size: int = 4
    seed: int = 0


def vae_loss(vae: WanVAE, video: torch.Tensor, kl_weight: float, generator: torch.Generator) -> torch.Tensor:
    """L1 reconstruction + kl_weight * KL(q(z|x) || N(0, 1)) for [B, 3, 1+4k, H, W] clips in [-1, 1]."""
    mu, log_var = vae.moments(video)
    log_var = log_var.clamp(-30, 20)
    z = mu + torch.exp(0.5 * log_var) * torch.randn(mu.shape, generator=generator).to(mu.device)
    recon = torch.cat(list(vae.reconstruct_chunks(z, normalized=False)), dim=2)
    kl = 0.5 * (mu.square() + log_var.exp() - 1 - log_var).mean()
    return (recon - video.float()).abs().mean() + kl_weight * kl


def train_vae(vae: WanVAE, clips: torch.Tensor, cfg: VAETrainConfig, log=print) -> list[float]:
    """Train on clips [N, 3, 1+4k, H, W]; returns the loss of every step."""
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    vae.train()
    losses = []
    for step in range(cfg.steps):
        pick = torch.randint(0, clips.shape[0], (cfg.batch_size,), generator=generator)
        loss = vae_loss(vae, clips[pick], cfg.kl_weight, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, cfg.steps // 10) == 0:
            log(f"vae step {step + 1}/{cfg.steps} loss {losses[-1]:.4f}")
    vae.eval()
    return losses


@torch.no_grad()
def reconstruction_error(vae: WanVAE, clips: torch.Tensor) -> float:
    """Mean L1 error of reconstructing clips from their posterior means (deterministic)."""
    errors = [(vae.decode(vae.encode(c[None], normalize=False), normalized=False, clamp=False) - c[None]).abs().mean()
              for c in clips]
    return float(torch.stack(errors).mean())


@torch.no_grad()
def measure_latent_stats(vae: WanVAE, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the posterior means over the data (the normalisation constants)."""
    mu = torch.cat([vae.encode(clip[None], normalize=False) for clip in clips])
    return mu.mean(dim=(0, 2, 3, 4)), mu.std(dim=(0, 2, 3, 4)).clamp_min(1e-3)


def save_vae(vae: WanVAE, path: str | Path) -> Path:
    """Official-layout weights with the latent statistics in the metadata (read by our loader)."""
    import json

    metadata = {"latents_mean": json.dumps(vae.latents_mean.flatten().tolist()),
                "latents_std": json.dumps(vae.latents_std.flatten().tolist())}
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(path), metadata=metadata)
    return Path(path)
