"""Stand-ins for the ComfyUI core nodes our workflows use, for the headless runner only.

Inside ComfyUI the real LoadImage, CreateVideo and SaveVideo run; these
mirror their inputs (so the same workflow files run in both) and do the
minimum: read an image, bundle frames with a frame rate, write an MP4 (or an
animated WEBP when PyAV is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...uniworld_core.media import av_available, load_image, save_mp4, save_webp


@dataclass
class Folders:
    input: Path = Path("input")
    output: Path = Path("output")


FOLDERS = Folders()


@dataclass
class VideoStandIn:
    frames: torch.Tensor  # [T, H, W, 3] in 0..1
    fps: float


class StandInLoadImage:
    """Runner stand-in for ComfyUI's LoadImage."""

    DESCRIPTION = "Stand-in for ComfyUI's Load Image (headless runner only)."
    CATEGORY, FUNCTION = "image", "load"
    RETURN_TYPES, RETURN_NAMES = ("IMAGE", "MASK"), ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        files = sorted(p.name for p in FOLDERS.input.glob("*") if p.is_file()) if FOLDERS.input.is_dir() else []
        return {"required": {"image": (files, {"image_upload": True, "tooltip": "Image in the input folder."})}}

    def load(self, image):
        picture = load_image(FOLDERS.input / image)
        return picture[None], torch.zeros(1, *picture.shape[:2])


class StandInCreateVideo:
    """Runner stand-in for ComfyUI's CreateVideo."""

    DESCRIPTION = "Stand-in for ComfyUI's Create Video (headless runner only)."
    CATEGORY, FUNCTION = "image/video", "create"
    RETURN_TYPES, RETURN_NAMES = ("VIDEO",), ("VIDEO",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {"tooltip": "Frames."}),
                             "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                               "tooltip": "Frame rate."})},
                "optional": {"audio": ("AUDIO", {"tooltip": "Ignored by the stand-in."})}}

    def create(self, images, fps, audio=None):
        return (VideoStandIn(images, fps),)


class StandInSaveVideo:
    """Runner stand-in for ComfyUI's SaveVideo."""

    DESCRIPTION = "Stand-in for ComfyUI's Save Video (headless runner only)."
    CATEGORY, FUNCTION, OUTPUT_NODE = "image/video", "save", True
    RETURN_TYPES, RETURN_NAMES = (), ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO", {"tooltip": "The video to save."}),
                             "filename_prefix": ("STRING", {"default": "video/ComfyUI", "tooltip": "Prefix."}),
                             "format": (["auto", "mp4"], {"default": "auto", "tooltip": "Container."}),
                             "codec": (["auto", "h264"], {"default": "auto", "tooltip": "Codec."})}}

    def save(self, video, filename_prefix, format, codec):
        stem = FOLDERS.output / filename_prefix
        stem.parent.mkdir(parents=True, exist_ok=True)
        counter = 1 + len(list(stem.parent.glob(f"{stem.name}_*_.*")))
        suffix = "mp4" if av_available() else "webp"
        path = stem.parent / f"{stem.name}_{counter:05}_.{suffix}"
        fps = round(video.fps)
        (save_mp4 if suffix == "mp4" else save_webp)(video.frames, path, fps)
        return {"ui": {"videos": [str(path)]}, "result": ()}


STANDINS = {"LoadImage": StandInLoadImage, "CreateVideo": StandInCreateVideo, "SaveVideo": StandInSaveVideo}
STANDIN_TITLES = {"LoadImage": "Load Image", "CreateVideo": "Create Video", "SaveVideo": "Save Video"}
