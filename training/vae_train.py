"""Training the Wan2.1 VAE architecture (e.g. at a small width, on the toy world's frames).

Loss: L1 reconstruction of the clip plus a small KL term on the posterior,
the clip going through the encoder and decoder chunk by chunk as at
inference (the causal cache passes values between chunks, not gradients).
Train on clips as long as the ones the model will encode: error builds up
chunk after chunk beyond the length seen in training (a VAE trained on 9-frame
clips reconstructed frames 0-8 at L1 ~0.1 and frame 16 at 0.3-0.8).
A VAE trained from scratch starts from `init_for_training`: with PyTorch's
default initialisation the Wan blocks collapse (see its docstring).
Afterwards the per-channel latent mean and std are measured on the data and
stored with the weights, so the DiT sees normalised latents as with Wan2.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from uniworld_core.vae import WanVAE
from uniworld_core.vae_blocks import AttentionBlock, ResidualBlock


@dataclass
class VAETrainConfig:
    """Optimiser settings for the VAE.

    Meant for a VAE prepared by `init_for_training`. Keep the learning rate
    modest: the 3x3x3 convolutions have fan-ins in the thousands and Adam moves
    every weight by about `lr` per step (on toy clips 4e-4 with batches of 2 was
    erratic: held-out first-frame L1 0.32 after 400 steps, 0.14 at 2e-4 / batch 4).
    """

    steps: int = 1000
    lr: float = 2e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    kl_weight: float = 1e-6
    sample_posterior: bool = False  # decode the posterior mean (what the DiT sees) unless True
    crop: int | None = None  # train on random crop x crop windows (multiples of 8): same convs, cheaper steps
    batch_size: int = 4
    eval_every: int = 100  # held-out reconstruction check; the best weights are kept
    seed: int = 0


def init_for_training(vae: WanVAE) -> WanVAE:
    """Re-initialise a fresh VAE so that from-scratch training reads its latent.

    Convolutions get fan-in (unit-gain) normal weights and zero biases, and the
    last convolution of every residual and attention block starts at zero, so each block is an
    identity at first and the latent reaches the output undiluted. With PyTorch's
    default init the decoder's input is dominated by bias constants (latent
    spread 0.007 against 0.04 on toy frames), training settles on an output that
    ignores the latent apart from a dark/light switch, and L1 sticks at ~0.32 for
    any learning rate from 5e-5 to 1e-3; with this init it falls to 0.08 in 200
    steps on the same 20 frames.
    """
    for module in vae.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            nn.init.zeros_(module.bias)
    for module in vae.modules():
        if isinstance(module, ResidualBlock):
            nn.init.zeros_(module.residual[-1].weight)
        elif isinstance(module, AttentionBlock):
            nn.init.zeros_(module.proj.weight)
    return vae


def vae_loss(vae: WanVAE, video: torch.Tensor, kl_weight: float, generator: torch.Generator,
             sample_posterior: bool = True) -> torch.Tensor:
    """L1 reconstruction + kl_weight * KL(q(z|x) || N(0, 1)) for [B, 3, 1+4k, H, W] clips in [-1, 1]."""
    mu, log_var = vae.moments(video)
    log_var = log_var.clamp(-30, 20)
    z = mu
    if sample_posterior:
        z = mu + torch.exp(0.5 * log_var) * torch.randn(mu.shape, generator=generator).to(mu.device)
    recon = torch.cat(list(vae.reconstruct_chunks(z, normalized=False)), dim=2)
    kl = 0.5 * (mu.square() + log_var.exp() - 1 - log_var).mean()
    return (recon - video.float()).abs().mean() + kl_weight * kl


def _random_crop(clips: torch.Tensor, size: int | None, generator: torch.Generator) -> torch.Tensor:
    if size is None or size >= min(clips.shape[-2:]):
        return clips
    top, left = (int(torch.randint(0, (n - size) // 8 + 1, (1,), generator=generator)) * 8 for n in clips.shape[-2:])
    return clips[..., top:top + size, left:left + size]


def _schedule(cfg: VAETrainConfig):
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        return warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps)))
    return factor


def train_vae(vae: WanVAE, clips: torch.Tensor, cfg: VAETrainConfig, held_out: torch.Tensor | None = None,
              log=print) -> list[float]:
    """Train on clips [N, 3, 1+4k, H, W]; returns the loss of every step.

    With `held_out` clips the reconstruction error (first frame / later frames)
    is logged every `eval_every` steps and the best weights are restored at the end.
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
    best, best_state, losses = math.inf, None, []
    for step in range(cfg.steps):
        vae.train()
        pick = torch.randint(0, clips.shape[0], (cfg.batch_size,), generator=generator)
        batch = _random_crop(clips[pick], cfg.crop, generator)
        loss = vae_loss(vae, batch, cfg.kl_weight, generator, cfg.sample_posterior)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if held_out is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            first, later = frame_errors(vae, held_out)
            if first + later < best:
                best, best_state = first + later, {k: v.clone() for k, v in vae.state_dict().items()}
            if log:
                log(f"vae step {step + 1}/{cfg.steps} loss {losses[-1]:.4f} held-out L1 first frame {first:.4f} "
                    f"later frames {later:.4f}")
        elif log and (step + 1) % max(1, cfg.steps // 10) == 0:
            log(f"vae step {step + 1}/{cfg.steps} loss {losses[-1]:.4f}")
    if best_state is not None:
        vae.load_state_dict(best_state)
    vae.eval()
    return losses


@torch.no_grad()
def frame_errors(vae: WanVAE, clips: torch.Tensor) -> tuple[float, float]:
    """Mean L1 reconstruction error of the first frame and of the later frames (posterior means)."""
    vae.eval()
    errors = torch.stack([(vae.decode(vae.encode(c[None], normalize=False), normalized=False, clamp=False)
                           - c[None]).abs().mean(dim=(0, 1, 3, 4)) for c in clips]).mean(0)
    return float(errors[0]), float(errors[1:].mean()) if errors.numel() > 1 else float(errors[0])


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
