"""Sampling nodes: Fourier Cutoff and the FlashI2V Sampler."""

from __future__ import annotations

import torch

from ..uniworld_core import REPORT, InputError, SamplerSettings, StartFrame, VideoSettings, applied, encode_start
from ..uniworld_core.sampling import CacheSettings, CacheStats, generate_latents
from . import comfy_env
from .types import CACHE, CATEGORY, COND, DIT, FOURIER, VAE, bounds, size_inputs, spec

MAX_SEED = 0xFFFFFFFFFFFFFFFF
RATIO_TOOLTIP = ("Fourier ratio: the share of spectral energy left in the low band; the start frame's "
                 f"frequencies above it guide the video. {REPORT.fourier_ratio} = the official inference value; "
                 "higher keeps fewer, finer details.")


def latent_preview(latents: torch.Tensor):
    """A rough RGB look at the middle frame of normalised latents (three channel groups, any channel count)."""
    from PIL import Image

    frame = latents[0, :, latents.shape[2] // 2].float()
    rgb = torch.stack([group.mean(0) for group in torch.tensor_split(frame, 3)], dim=-1)
    rgb = ((torch.tanh(rgb) + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return Image.fromarray(rgb).resize((rgb.shape[1] * 8, rgb.shape[0] * 8), Image.NEAREST)


def fourier_preview(start: StartFrame, scale: int) -> torch.Tensor:
    """The kept high frequencies as a grey IMAGE [1, H, W, 3] (brighter = kept); `scale` is the VAE's spatial
    factor, so the preview has the start image's size."""
    highs = start.high_frequencies[0, :, 0].mean(0)  # [h, w]
    highs = (highs - highs.min()) / (highs.max() - highs.min()).clamp_min(1e-8)
    preview = highs.repeat_interleave(scale, 0).repeat_interleave(scale, 1)[..., None].expand(-1, -1, 3)
    return preview[None].float().cpu()


def encode_start_image(vae, image: torch.Tensor, width: int, height: int, fourier_ratio: float) -> StartFrame:
    """The VAE visits the device only to encode the first frame."""
    with vae.placement.active():
        return encode_start(vae.vae, image[0], width, height, fourier_ratio, vae.device)


class UniWorldFourierCutoff:
    DESCRIPTION = ("Encodes the start image once and computes its Fourier guidance: the high frequencies "
                   "above a cutoff chosen so the low band keeps `fourier_ratio` of the spectrum. The "
                   "sampler reuses both; the preview shows what is kept.")
    CATEGORY = CATEGORY
    FUNCTION = "cutoff"
    RETURN_TYPES = (FOURIER, "IMAGE")
    RETURN_NAMES = ("fourier", "preview")
    OUTPUT_TOOLTIPS = ("The encoded start frame and its Fourier guidance, for the sampler.",
                       "The high-frequency map (brighter = kept).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": spec(VAE, "The Wan2.1 VAE, to encode the start image."),
            "image": spec("IMAGE", "The start image (the one the sampler animates)."),
            **size_inputs(),
            "fourier_ratio": spec("FLOAT", RATIO_TOOLTIP, default=REPORT.fourier_ratio, **bounds("fourier_ratio"),
                                  step=0.01),
        }}

    def cutoff(self, vae, image, width, height, fourier_ratio):
        start = encode_start_image(vae, image, width, height, fourier_ratio)
        return (start, fourier_preview(start, vae.vae.cfg.spatial_factor))


class UniWorldSampler:
    DESCRIPTION = ("FlashI2V sampling: Euler steps with latent shifting (the DiT never sees the start image "
                   "directly), Fourier guidance and classifier-free guidance. Outputs Wan latents.")
    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents (ComfyUI's raw Wan latent convention) for UniWorld VAE Decode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": spec(DIT, "From UniWorld DiT Loader (or LoRA Loader)."),
            "vae": spec(VAE, "The Wan2.1 VAE, to encode the start image."),
            "positive": spec(COND, "From VLM Encode / T5 Encode."),
            "negative": spec(COND, "From VLM Encode / T5 Encode."),
            **size_inputs(),
            "frames": spec("INT", f"Frame count, 4k+1 ({REPORT.frames} = 3 s at {REPORT.fps} fps).",
                           default=REPORT.frames, **bounds("frames", True), step=4),
            "steps": spec("INT", f"Euler steps ({REPORT.steps} in the report).", default=REPORT.steps,
                          **bounds("steps", True)),
            "cfg": spec("FLOAT", f"Classifier-free guidance scale ({REPORT.cfg} in the report; 1 = off).",
                        default=REPORT.cfg, **bounds("cfg"), step=0.1),
            "shift": spec("FLOAT", f"Flow-matching time shift ({REPORT.shift} in the report).",
                          default=REPORT.shift, **bounds("shift"), step=0.1),
            "seed": spec("INT", "Noise seed: the same seed gives the same video on any device.",
                         default=REPORT.seed, min=0, max=MAX_SEED, control_after_generate=True),
        }, "optional": {
            "start_image": spec("IMAGE", "The image to animate (first frame). May be left out when a Fourier "
                                "Cutoff node, which encodes it once, is connected."),
            "cache": spec(CACHE, "From UniWorld Cache: skip DiT work while outputs change little (default: "
                          "off, every forward runs)."),
            "fourier": spec(FOURIER, "From UniWorld Fourier Cutoff: the start frame encoded once, with its "
                            f"Fourier guidance (default: encoded here at ratio {REPORT.fourier_ratio})."),
        }}

    def sample(self, model, vae, positive, negative, width, height, frames, steps, cfg, shift, seed,
               start_image=None, fourier=None, cache=None):
        if positive.context.shape[-1] != model.model.cfg.text_dim:
            raise InputError(f"conditioning {positive.context.shape[-1]} wide from {positive.encoder}",
                             f"{model.model.cfg.text_dim}-wide conditioning for {model.description}",
                             "Use the text encoder that belongs to this DiT.")
        video = VideoSettings(width=width, height=height, num_frames=frames, seed=seed)
        if fourier is None and start_image is None:
            raise InputError("no start image", "a start_image or a UniWorld Fourier Cutoff connected",
                             "Connect the image to animate.")
        start = fourier or encode_start_image(vae, start_image, width, height, REPORT.fourier_ratio)
        start.check_matches(video, start_image[0] if start_image is not None else None)
        settings = SamplerSettings(steps=steps, shift=shift, guidance_scale=cfg, fourier_ratio=start.fourier_ratio,
                                   cache=cache or CacheSettings())
        stats = CacheStats()
        hook = comfy_env.progress_hook(steps, latent_preview)
        try:
            with applied(model.model, model.loras):
                latents = generate_latents(model.model, vae.vae, None, positive.context, negative.context,
                                           video, settings, hook, start=start, stats=stats)
        except BaseException:
            comfy_env.release_memory()  # an interrupt leaves no sampling tensors behind
            raise
        if settings.cache.active:
            print(f"[UniWorld] cache: {stats.summary()}")
        return ({"samples": vae.vae.denormalize(latents.to(vae.device)).cpu()},)


class UniWorldCache:
    DESCRIPTION = ("Faster sampling without retraining. adaptive: a forward is replaced by the last "
                   "output-minus-input residual while the output is predicted to change little (EasyCache-like; "
                   "cond and uncond decided apart). wan: the Wan report's caches, self-attention recomputed every "
                   "few steps and, late in sampling, the unconditional branch every few steps. The sampler says "
                   "how many forwards it skipped.")
    CATEGORY = CATEGORY
    FUNCTION = "settings"
    RETURN_TYPES = (CACHE,)
    RETURN_NAMES = ("cache",)
    OUTPUT_TOOLTIPS = ("Cache settings for the UniWorld Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        default = CacheSettings()
        return {"required": {
            "policy": spec(["adaptive", "wan", "adaptive+wan", "off"], "Which caches run.", default="adaptive"),
            "threshold": spec("FLOAT", "adaptive: accumulated predicted change before a forward runs again "
                              "(higher = faster, less exact; 0 = every forward runs).", default=default.threshold,
                              min=0.0, max=5.0, step=0.01),
            "warmup_steps": spec("INT", "adaptive: first steps that always run.", default=default.warmup,
                                 min=0, max=1000),
            "end": spec("FLOAT", "adaptive: no skipping after this share of the steps.", default=default.end,
                        min=0.0, max=1.0, step=0.01),
            "attention_interval": spec("INT", "wan: self-attention recomputed every N steps (1 = off).",
                                       default=default.attention_interval, min=1, max=10),
            "attention_start": spec("FLOAT", "wan: share of the steps before attention is cached.",
                                    default=default.attention_start, min=0.0, max=1.0, step=0.01),
            "uncond_interval": spec("INT", "wan: unconditional branch run every N steps late in sampling "
                                    "(1 = off).", default=default.uncond_interval, min=1, max=10),
            "uncond_start": spec("FLOAT", "wan: share of the steps before the unconditional branch is cached.",
                                 default=default.uncond_start, min=0.0, max=1.0, step=0.01),
        }}

    def settings(self, policy, threshold, warmup_steps, end, attention_interval, attention_start, uncond_interval,
                 uncond_start):
        return (CacheSettings(policies=tuple(p for p in policy.split("+") if p != "off"), threshold=threshold,
                              warmup=warmup_steps, end=end, attention_interval=attention_interval,
                              attention_start=attention_start, uncond_interval=uncond_interval,
                              uncond_start=uncond_start),)


NODES = {"UniWorldCache": (UniWorldCache, "UniWorld Cache"),
         "UniWorldFourierCutoff": (UniWorldFourierCutoff, "UniWorld Fourier Cutoff"),
         "UniWorldSampler": (UniWorldSampler, "UniWorld Sampler (FlashI2V)")}
