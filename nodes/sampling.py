"""Sampling nodes: Fourier Cutoff and the FlashI2V Sampler."""

from __future__ import annotations

import torch

from ..uniworld_core.errors import InputError
from ..uniworld_core.fourier import INFERENCE_ENERGY_RATIO, high_frequency
from ..uniworld_core.lora import applied
from ..uniworld_core.pipeline import VideoSettings, encode_start_frame, generate_latents
from ..uniworld_core.sampler import SamplerSettings
from . import comfy_env
from .types import CATEGORY, COND, DIT, FOURIER, VAE, FourierGuidance, size_inputs, spec

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def latent_preview(latents: torch.Tensor):
    """A rough RGB look at the middle frame of normalised latents (three channel groups)."""
    from PIL import Image

    frame = latents[0, :, latents.shape[2] // 2].float()
    rgb = torch.stack([frame[0:5].mean(0), frame[5:10].mean(0), frame[10:16].mean(0)], dim=-1)
    rgb = ((torch.tanh(rgb) + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return Image.fromarray(rgb).resize((rgb.shape[1] * 8, rgb.shape[0] * 8), Image.NEAREST)


class UniWorldFourierCutoff:
    DESCRIPTION = ("Fourier guidance: the start frame's high frequencies above a cutoff chosen so the low "
                   "band keeps `energy_ratio` of the spectrum. The preview shows what is kept.")
    CATEGORY = CATEGORY
    FUNCTION = "cutoff"
    RETURN_TYPES = (FOURIER, "IMAGE")
    RETURN_NAMES = ("fourier", "preview")
    OUTPUT_TOOLTIPS = ("Fourier guidance for the sampler.", "The high-frequency map (brighter = kept).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": spec(VAE, "The Wan2.1 VAE (to encode the image for the preview)."),
            "image": spec("IMAGE", "The start image."),
            **size_inputs(),
            "energy_ratio": spec("FLOAT", "Share of spectral energy left in the low band. 0.1 = the official "
                                 "inference value; higher keeps fewer, finer details.",
                                 default=INFERENCE_ENERGY_RATIO, min=0.0, max=1.0, step=0.01),
        }}

    def cutoff(self, vae, image, width, height, energy_ratio):
        video = VideoSettings(width=width, height=height, num_frames=1)
        with vae.placement.active():
            start = encode_start_frame(vae.vae, image[0], video, vae.device)
        highs = high_frequency(start, energy_ratio)[0, :, 0].mean(0)  # [h, w]
        highs = (highs - highs.min()) / (highs.max() - highs.min()).clamp_min(1e-8)
        preview = highs.repeat_interleave(8, 0).repeat_interleave(8, 1)[..., None].expand(-1, -1, 3)
        return (FourierGuidance(energy_ratio), preview[None].float().cpu())


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
            "start_image": spec("IMAGE", "The image to animate (first frame)."),
            **size_inputs(),
            "frames": spec("INT", "Frame count, 4k+1 (49 = 3 s at 16 fps).", default=49, min=1, max=1025, step=4),
            "steps": spec("INT", "Euler steps (50 in the report).", default=50, min=1, max=1000),
            "cfg": spec("FLOAT", "Classifier-free guidance scale (5.0 in the report; 1 = off).",
                        default=5.0, min=1.0, max=30.0, step=0.1),
            "shift": spec("FLOAT", "Flow-matching time shift (7.0 in the report).", default=7.0,
                          min=0.1, max=50.0, step=0.1),
            "seed": spec("INT", "Noise seed: the same seed gives the same video on any device.",
                         default=0, min=0, max=MAX_SEED, control_after_generate=True),
        }, "optional": {
            "fourier": spec(FOURIER, "From UniWorld Fourier Cutoff (default: energy ratio 0.1)."),
        }}

    def sample(self, model, vae, positive, negative, start_image, width, height, frames, steps, cfg,
               shift, seed, fourier=None):
        if positive.context.shape[-1] != model.model.cfg.text_dim:
            raise InputError(f"conditioning {positive.context.shape[-1]} wide from {positive.encoder}",
                             f"{model.model.cfg.text_dim}-wide conditioning for {model.description}",
                             "Use the text encoder that belongs to this DiT.")
        ratio = fourier.energy_ratio if fourier is not None else INFERENCE_ENERGY_RATIO
        video = VideoSettings(width=width, height=height, num_frames=frames, seed=seed)
        settings = SamplerSettings(steps=steps, shift=shift, guidance_scale=cfg, fourier_ratio=ratio)
        hook = comfy_env.progress_hook(steps, latent_preview)
        with vae.placement.active():  # the VAE visits the device only to encode the first frame
            start = encode_start_frame(vae.vae, start_image[0], video, vae.device)
        try:
            with applied(model.model, model.loras):
                latents = generate_latents(model.model, vae.vae, None, positive.context, negative.context,
                                           video, settings, hook, start_latents=start)
        except BaseException:
            comfy_env.release_memory()  # an interrupt leaves no sampling tensors behind
            raise
        return ({"samples": vae.vae.denormalize(latents.to(vae.device)).cpu()},)


NODES = {"UniWorldFourierCutoff": (UniWorldFourierCutoff, "UniWorld Fourier Cutoff"),
         "UniWorldSampler": (UniWorldSampler, "UniWorld Sampler (FlashI2V)")}
