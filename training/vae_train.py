"""Training the Wan2.1 VAE architecture (e.g. at a small width, on the toy world's frames).

Loss: MSE (or L1) reconstruction plus a small KL term on the posterior, the
clip going through the encoder and decoder chunk by chunk as at
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

from uniworld_core.model import AttentionBlock, Resample, ResidualBlock, WanVAE


@dataclass
class VAETrainConfig:
    """Optimiser settings for the VAE (meant for a VAE prepared by `init_for_training`).

    Training runs `image_steps` on batches of single frames drawn from the clips
    (cheap: the shapes and colours), then `steps` on whole clips (the motion). MSE
    keeps small objects: with L1 the median background wins and a width-16 VAE
    washed the toy shapes out. Adam moves every weight by about `lr` per step,
    and the 3x3x3 convolutions have fan-ins in the thousands: keep it modest.
    """

    steps: int = 1000  # steps on whole clips
    image_steps: int = 0  # steps on single frames first
    image_batch: int = 16
    lr: float = 3e-4
    warmup_steps: int = 50
    grad_clip: float = 1.0
    kl_weight: float = 1e-6
    reconstruction: str = "mse"  # or "l1"
    sample_posterior: bool = False  # decode the posterior mean (what the DiT sees) unless True
    # Decode the posterior mean plus N(0, latent_noise^2) (raw latent units): every latent frame must then
    # carry its content above one noise level, so the causal VAE cannot leave frame 0 (encoded alone) at a
    # fraction of the others' scale, and the decoder learns to take small latent errors (the DiT's) calmly.
    latent_noise: float = 0.0
    crop: int | None = None  # train on random crop x crop windows (multiples of 8): same convs, cheaper steps
    batch_size: int = 4
    eval_every: int = 100  # held-out reconstruction check during the clip steps; the best weights are kept
    seed: int = 0

    def __post_init__(self):
        if self.reconstruction not in ("mse", "l1"):
            raise ValueError(f"VAETrainConfig.reconstruction is {self.reconstruction!r}; expected 'mse' or 'l1'")
        if self.latent_noise < 0:
            raise ValueError(f"VAETrainConfig.latent_noise is {self.latent_noise}; expected 0 (off) or more")


def init_for_training(vae: WanVAE) -> WanVAE:
    """Re-initialise a fresh VAE so that from-scratch training reads its latent, frame by frame.

    Convolutions get fan-in (unit-gain) normal weights and zero biases, and the
    last convolution of every residual and attention block starts at zero, so each
    block is an identity at first and the latent reaches the output undiluted. With
    PyTorch's default init the decoder's input is dominated by bias constants,
    training settles on an output that ignores the latent apart from a dark/light
    switch, and L1 sticks at ~0.32 for any learning rate from 5e-5 to 1e-3.

    The causal 3-D convolutions also start frame-wise: only the tap on the current
    frame is non-zero, the encoder's time downsampling keeps the newest frame and
    the decoder's time upsampling repeats it. The VAE then begins as an image
    autoencoder, which learns shapes from single frames (`VAETrainConfig.image_steps`),
    and training on clips adds the temporal taps. Begun with all taps live, a width-16
    VAE after 2000 clip steps (18 min) lost the toy objects' shapes (held-out
    PSNR 24.9 dB); frame-wise with 600 image + 800 clip steps (10 min) reached 27.0 dB.
    """
    for module in vae.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            nn.init.zeros_(module.bias)
            if isinstance(module, nn.Conv3d) and module.weight.shape[2] > 1:
                _init_current_frame_only(module)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
    for module in vae.modules():
        if isinstance(module, ResidualBlock):
            nn.init.zeros_(module.residual[-1].weight)
        elif isinstance(module, AttentionBlock):
            nn.init.zeros_(module.proj.weight)
        elif isinstance(module, Resample) and hasattr(module, "time_conv"):
            _init_time_resample(module.time_conv)
    return vae


@torch.no_grad()
def _init_current_frame_only(conv: nn.Conv3d) -> None:
    # Causal padding puts the current frame on the last temporal tap.
    conv.weight.zero_()
    current = conv.weight[:, :, -1]
    nn.init.kaiming_normal_(current, nonlinearity="linear")


@torch.no_grad()
def _init_time_resample(conv: nn.Conv3d) -> None:
    """Identity on the newest frame: [C] -> [C] keeps it (downsampling), [C] -> [2C] repeats it (upsampling)."""
    out_dim, in_dim = conv.weight.shape[:2]
    conv.weight.zero_()
    eye = torch.eye(in_dim)
    for half in range(out_dim // in_dim):
        conv.weight[half * in_dim:(half + 1) * in_dim, :, -1, 0, 0] = eye


def vae_loss(vae: WanVAE, video: torch.Tensor, kl_weight: float, generator: torch.Generator,
             sample_posterior: bool = True, reconstruction: str = "mse", latent_noise: float = 0.0,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Reconstruction (MSE or L1) + kl_weight * KL(q(z|x) || N(0, 1)) for [B, 3, 1+4k, H, W] clips in [-1, 1].

    The decoder reads the posterior mean, a posterior sample (`sample_posterior`), or either plus
    N(0, latent_noise^2). `weight` [B, 1, 1+4k, H, W] weighs the reconstruction per pixel (a weighted mean).
    """
    mu, log_var = vae.moments(video)
    log_var = log_var.clamp(-30, 20)
    z = mu
    if sample_posterior:
        z = mu + torch.exp(0.5 * log_var) * torch.randn(mu.shape, generator=generator).to(mu.device)
    if latent_noise > 0:
        z = z + latent_noise * torch.randn(mu.shape, generator=generator).to(mu.device)
    recon = torch.cat(list(vae.reconstruct_chunks(z, normalized=False)), dim=2)
    kl = 0.5 * (mu.square() + log_var.exp() - 1 - log_var).mean()
    error = recon - video.float()
    error = error.square() if reconstruction == "mse" else error.abs()
    if weight is not None:
        error = error * weight / weight.mean()
    return error.mean() + kl_weight * kl


def _random_crop(clips: torch.Tensor, size: int | None, generator: torch.Generator) -> torch.Tensor:
    if size is None or size >= min(clips.shape[-2:]):
        return clips
    top, left = (int(torch.randint(0, (n - size) // 8 + 1, (1,), generator=generator)) * 8 for n in clips.shape[-2:])
    return clips[..., top:top + size, left:left + size]


def _schedule(cfg: VAETrainConfig):
    total = cfg.image_steps + cfg.steps

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        return warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(step, total) / total)))
    return factor


def _batch(clips: torch.Tensor, cfg: VAETrainConfig, step: int, generator: torch.Generator) -> torch.Tensor:
    """Whole clips, or during the image steps single frames [B, 3, 1, h, w] from random clips and times."""
    if step < cfg.image_steps:
        pick = torch.randint(0, clips.shape[0], (cfg.image_batch,), generator=generator)
        times = torch.randint(0, clips.shape[2], (cfg.image_batch,), generator=generator)
        batch = clips[pick, :, times][:, :, None]
    else:
        batch = clips[torch.randint(0, clips.shape[0], (cfg.batch_size,), generator=generator)]
    return _random_crop(batch, cfg.crop, generator)


def train_vae(vae: WanVAE, clips: torch.Tensor, cfg: VAETrainConfig, held_out: torch.Tensor | None = None,
              log=print, weights: torch.Tensor | None = None) -> list[float]:
    """Train on clips [N, 3, 1+4k, H, W]; returns the loss of every step (image steps first).

    With `held_out` clips the reconstruction error (first frame / later frames)
    is logged every `eval_every` clip steps and the best weights are restored at the end.
    `weights` [N, 1, 1+4k, H, W] weigh each pixel's reconstruction error (`vae_loss`).
    """
    if weights is not None:
        if weights.shape != (clips.shape[0], 1, *clips.shape[2:]):
            raise ValueError(f"VAE loss weights {tuple(weights.shape)} do not fit clips {tuple(clips.shape)}: "
                             f"expected {(clips.shape[0], 1, *clips.shape[2:])}")
        clips = torch.cat([clips, weights.to(clips.dtype)], dim=1)  # drawn and cropped together
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
    best, best_state, losses = math.inf, None, []
    total = cfg.image_steps + cfg.steps
    for step in range(total):
        vae.train()
        batch = _batch(clips, cfg, step, generator)
        loss = vae_loss(vae, batch[:, :3], cfg.kl_weight, generator, cfg.sample_posterior, cfg.reconstruction,
                        cfg.latent_noise, batch[:, 3:] if weights is not None else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        clip_step = step + 1 - cfg.image_steps
        if held_out is not None and clip_step > 0 and (clip_step % cfg.eval_every == 0 or step + 1 == total):
            first, later = frame_errors(vae, held_out)
            if first + later < best:
                best, best_state = first + later, {k: v.clone() for k, v in vae.state_dict().items()}
            if log:
                log(f"vae step {step + 1}/{total} loss {losses[-1]:.4f} held-out L1 first frame {first:.4f} "
                    f"later frames {later:.4f}")
        elif log and (step + 1) % max(1, total // 10) == 0:
            log(f"vae step {step + 1}/{total} ({'images' if step < cfg.image_steps else 'clips'}) "
                f"loss {losses[-1]:.4f}")
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
