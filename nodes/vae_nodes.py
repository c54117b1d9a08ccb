"""VAE nodes: encode frames to Wan latents, decode latents to frames (chunked, optionally tiled)."""

from __future__ import annotations

from ..uniworld_core import VideoSettings
from ..uniworld_core.media import frames_to_video, video_to_frames
from ..uniworld_core.sampling import decode_chunked, frame_index, latent_shape, smooth_joins
from . import comfy_env
from .types import CATEGORY, CHUNKS_KEY, JOINS_KEY, VAE, size_inputs, spec


class UniWorldVAEEncode:
    DESCRIPTION = ("Encodes frames (an IMAGE batch of 4k+1 frames, or one image) with the Wan2.1 VAE, "
                   "chunk by chunk, after scaling and centre-cropping them to the size.")
    CATEGORY = CATEGORY
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Wan latents in ComfyUI's raw convention.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": spec(VAE, "The Wan2.1 VAE."),
            "images": spec("IMAGE", "One image or the frames of a clip (4k+1 of them)."),
            **size_inputs(),
        }}

    def encode(self, vae, images, width, height):
        latent_shape(VideoSettings(width=width, height=height, num_frames=images.shape[0]), vae.vae)
        video = frames_to_video(images, width, height).to(vae.device)
        hook = comfy_env.progress_hook(1 + (images.shape[0] - 1) // 4)
        with vae.placement.active():
            return ({"samples": vae.vae.encode(video, normalize=False, progress=hook).cpu()},)


class UniWorldVAEDecode:
    DESCRIPTION = ("Decodes Wan latents to frames one latent frame at a time (memory does not grow with "
                   "length); optional spatial tiles for large videos on small cards.")
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Video frames, for ComfyUI's CreateVideo and SaveVideo.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": spec(VAE, "The Wan2.1 VAE."),
            "latent": spec("LATENT", "Video latents from the UniWorld Sampler."),
            "tiled": spec("BOOLEAN", "Decode in overlapping spatial tiles (less VRAM, same look).",
                          default=False),
            "tile_size": spec("INT", "Tile size in latent pixels (x8 in the image).", default=32,
                              min=8, max=512, step=4),
            "tile_overlap": spec("INT", "Tile overlap in latent pixels, blended linearly.", default=8,
                                 min=1, max=128),
        }}

    def decode(self, vae, latent, tiled, tile_size, tile_overlap):
        chunks = latent.get(CHUNKS_KEY) or [latent["samples"].shape[2]]
        frames = self._decode(vae, latent, chunks, tiled, tile_size, tile_overlap)
        joins = latent.get(JOINS_KEY)  # where Extend Video's continuations begin
        if joins:
            frames = smooth_joins(frames, [(frame_index(at, chunks), bool(match)) for at, match in joins])
        return (frames,)

    def _decode(self, vae, latent, chunks, tiled, tile_size, tile_overlap):
        samples = latent["samples"].to(vae.device)
        if len(chunks) > 1:  # runs chained by Extend Video's fallback: each decoded on its own, then joined
            if tiled:
                print("[UniWorld] VAE Decode: the fallback's chained runs are decoded whole frames, one run at a "
                      "time; 'tiled' applies to single runs only")
            with vae.placement.active():
                return decode_chunked(vae.vae, vae.vae.normalize(samples), chunks)
        hook = comfy_env.progress_hook(samples.shape[2])
        with vae.placement.active():
            if tiled:
                video = vae.vae.decode_tiled(samples, tile_size, tile_overlap, normalized=False)
            else:
                video = vae.vae.decode(samples, normalized=False, progress=hook)
        return video_to_frames(video).cpu()


NODES = {"UniWorldVAEEncode": (UniWorldVAEEncode, "UniWorld VAE Encode"),
         "UniWorldVAEDecode": (UniWorldVAEDecode, "UniWorld VAE Decode")}
