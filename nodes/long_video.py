"""Long videos: UniWorld Extend Video adds frames to a latent video (continuation, or the chained fallback)."""

from __future__ import annotations

from ..uniworld_core import REPORT, InputError, SamplerSettings, VideoSettings, applied
from ..uniworld_core.sampling import CacheSettings, ContinuationSettings, extend_latents
from . import comfy_env
from .sampling import latent_preview
from .types import CACHE, CATEGORY, CHUNKS_KEY, COND, DIT, FOURIER, JOINS_KEY, VAE, bounds, spec

MODES = ["continuation", "fallback: chained image-to-video"]


def chunks_of(latent: dict) -> list[int]:
    """The runs a LATENT is made of (one run unless a fallback extension added more)."""
    return list(latent.get(CHUNKS_KEY) or [latent["samples"].shape[2]])


class UniWorldExtendVideo:
    DESCRIPTION = ("Makes a video longer. continuation: the last latent frames are clean context and the DiT "
                   "samples the next ones, their colours matched to the video's (weights trained for continuation; "
                   "UniWorld VAE Decode cross-fades the join). fallback: a new image-to-video "
                   "run from the last frame, colour-matched and cross-faded at the join by UniWorld VAE Decode "
                   "(for weights that were not). Chain several for longer videos; each costs the same.")
    CATEGORY = CATEGORY
    FUNCTION = "extend"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The longer video's latents, for UniWorld VAE Decode (or another Extend Video).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": spec(DIT, "The DiT that made the video (UniWorld DiT Loader)."),
            "vae": spec(VAE, "The Wan2.1 VAE (the fallback decodes the last frame and encodes it again)."),
            "positive": spec(COND, "From VLM Encode / T5 Encode."),
            "negative": spec(COND, "From VLM Encode / T5 Encode."),
            "fourier": spec(FOURIER, "From the UniWorld Fourier Cutoff of the video's start image: every run keeps "
                            "its latent shift and Fourier guidance."),
            "latent": spec("LATENT", "The video so far (UniWorld Sampler or Extend Video)."),
            "add_frames": spec("INT", "Frames to add (a multiple of 4: one latent frame is 4 frames).",
                               default=36, min=4, max=1024, step=4),
            "context_frames": spec("INT", "continuation: latent frames of the video so far the DiT sees "
                                   "(4 = the last 16 frames).", default=4, min=1, max=64),
            "mode": spec(MODES, "continuation needs weights trained for it; the fallback works with any.",
                         default=MODES[0]),
            "steps": spec("INT", f"Euler steps ({REPORT.steps} in the report).", default=REPORT.steps,
                          **bounds("steps", True)),
            "cfg": spec("FLOAT", "Classifier-free guidance scale.", default=REPORT.cfg, **bounds("cfg"), step=0.1),
            "shift": spec("FLOAT", "Flow-matching time shift.", default=REPORT.shift, **bounds("shift"), step=0.1),
            "seed": spec("INT", "Noise seed of the new frames.", default=REPORT.seed, min=0,
                         max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
        }, "optional": {
            "cache": spec(CACHE, "From UniWorld Cache (default: off)."),
            "match_colours": spec("BOOLEAN", "continuation: match the new frames' colours to the frames they "
                                  "continue and to the first run's, against drift from chunk to chunk; off for "
                                  "videos whose lighting should change. (The fallback's runs are matched by "
                                  "UniWorld VAE Decode.)",
                                  default=True),
        }}

    def extend(self, model, vae, positive, negative, fourier, latent, add_frames, context_frames, mode, steps, cfg,
               shift, seed, cache=None, match_colours=True):
        if add_frames % 4:
            raise InputError(f"add_frames {add_frames}", "a multiple of 4 (one latent frame is 4 frames)")
        chunks = chunks_of(latent)
        height, width = (n * vae.vae.cfg.spatial_factor for n in latent["samples"].shape[3:])
        fourier.check_matches(VideoSettings(width=width, height=height))
        settings = ContinuationSettings(new_frames=add_frames // 4, context_frames=context_frames,
                                        fallback=mode != MODES[0], match=match_colours)
        sampler = SamplerSettings(steps=steps, shift=shift, guidance_scale=cfg, fourier_ratio=fourier.fourier_ratio,
                                  cache=cache or CacheSettings())
        hook = comfy_env.progress_hook(steps, latent_preview)
        with vae.placement.active():
            latents = vae.vae.normalize(latent["samples"].to(vae.device))
            try:
                with applied(model.model, model.loras):
                    latents, chunks = extend_latents(model.model, vae.vae, latents, chunks, fourier, positive.context,
                                                     negative.context, sampler, settings, add_frames // 4, seed, hook)
            except BaseException:
                comfy_env.release_memory()
                raise
            samples = vae.vae.denormalize(latents).cpu()
        joins = list(latent.get(JOINS_KEY) or [])
        if not settings.fallback:  # UniWorld VAE Decode smooths the colour and the join there
            joins.append([latent["samples"].shape[2], match_colours])
        return ({"samples": samples, CHUNKS_KEY: chunks, JOINS_KEY: joins},)


NODES = {"UniWorldExtendVideo": (UniWorldExtendVideo, "UniWorld Extend Video")}
