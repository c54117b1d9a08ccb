"""Images in, videos out: loading, resizing, a procedural demo image, WEBP/MP4 writing.

Frames travel as float tensors [T, H, W, 3] in 0..1 (ComfyUI's IMAGE layout).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .errors import InputError

MIN_IMAGE_SIDE = 16


MAX_IMAGE_PIXELS = 64 * 2**20  # 64 MP: far above any model input, far below a decompression bomb


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as [H, W, 3] float in 0..1 (16-bit and float images keep their full range)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(f"'{path}', an image of {width}x{height} pixels", f"at most "
                                 f"{MAX_IMAGE_PIXELS // 2**20} megapixels", "Downscale it first: the model "
                                 "sees it at the video's size anyway.")
            rgb = _as_rgb(img)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"'{path}', an image beyond Pillow's safety limit ({exc})",
                         f"at most {MAX_IMAGE_PIXELS // 2**20} megapixels", "Downscale it first.") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"'{path}' could not be read as an image ({exc})",
                         "a PNG, JPEG or WEBP file") from exc
    return torch.from_numpy(rgb)


def _as_rgb(img: Image.Image) -> np.ndarray:
    """[H, W, 3] float32 in 0..1; Pillow's own RGB conversion clips 16-bit images to white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(grey / top, 0, 1)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        grey = np.nan_to_num(np.asarray(img, dtype=np.float32))
        grey = np.clip(grey / max(float(grey.max()), 1.0), 0, 1)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[H, W, 3] in 0..1 -> [1, 3, height, width] in [-1, 1]: scale to cover, centre-crop.

    Resizing is bicubic with antialiasing, as the official pipeline does.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise InputError(f"an image of shape {tuple(image.shape)}", "[height, width, 3] RGB")
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"an image of {w}x{h} pixels",
                         f"at least {MIN_IMAGE_SIDE} pixels on each side",
                         "Use a larger conditioning image.")
    scale = max(width / w, height / h)
    new_h, new_w = max(height, math.ceil(h * scale)), max(width, math.ceil(w * scale))
    x = image.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    x = x[:, :, top:top + height, left:left + width].clamp(0, 1)
    return x * 2 - 1


def image_digest(image: torch.Tensor | Image.Image | None) -> str:
    """Content hash of an image (tensor or PIL) as 8-bit RGB, independent of object identity ('' for none).

    Two tensors that show the same picture have the same digest, so work done
    on one image (its encoding, its prompt features) is found again for the other.
    """
    if image is None:
        return ""
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"))
    else:
        array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes())
    digest.update(f"{array.shape}".encode())
    return digest.hexdigest()


def frames_to_video(frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[T, H, W, 3] frames in 0..1 -> [1, 3, T, height, width] in [-1, 1] (each frame fitted as `fit_image`)."""
    return torch.cat([fit_image(frame, width, height) for frame in frames]).permute(1, 0, 2, 3)[None]


def video_to_frames(video: torch.Tensor) -> torch.Tensor:
    """[1, 3, T, H, W] in [-1, 1] -> [T, H, W, 3] in 0..1."""
    return ((video[0].permute(1, 2, 3, 0).float() + 1) / 2).clamp(0, 1)


def demo_image(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A procedural test picture (soft discs on a gradient), [H, W, 3] in 0..1."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height)[:, None]
    xs = torch.linspace(0, 1, width)[None, :]
    img = torch.stack([0.2 + 0.6 * xs.expand(height, width), 0.3 + 0.4 * ys.expand(height, width),
                       torch.full((height, width), 0.6)], dim=-1)
    for _ in range(4):
        cx, cy, r = torch.rand(3, generator=gen).tolist()
        colour = torch.rand(3, generator=gen)
        dist = ((xs - cx) ** 2 + ((ys - cy) * height / width) ** 2).sqrt()
        alpha = torch.sigmoid((0.08 + 0.15 * r - dist) * 60)[..., None]
        img = img * (1 - alpha) + colour * alpha
    return img.clamp(0, 1)


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def save_webp(frames: torch.Tensor, path: str | Path, fps: int = 16) -> Path:
    """Write [T, H, W, 3] frames as an animated, looping WEBP (`read_webp` reads it back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in _to_uint8(frames)]
    images[0].save(path, format="WEBP", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0, lossless=False, quality=90)
    return path


def read_webp(path: str | Path, fps: int = 16) -> torch.Tensor:
    """Read an animated WEBP as [T, H, W, 3] in 0..1, one entry per frame of the clip that was saved.

    libwebp stores a frame that barely differs from the previous one as a longer
    showing of it, so a stored frame counts as many times as its duration spans frames.
    """
    frames = []
    try:
        with Image.open(path) as video:
            for index in range(getattr(video, "n_frames", 1)):
                video.seek(index)
                video.load()  # the frame's duration is read with its data
                frame = torch.from_numpy(np.asarray(video.convert("RGB"), dtype=np.float32) / 255.0)
                frames += [frame] * max(1, round(video.info.get("duration", 1000 / fps) * fps / 1000))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"'{path}' could not be read as a video ({exc})", "an animated WEBP file") from exc
    return torch.stack(frames)


def av_available() -> bool:
    """Whether the optional PyAV package is installed (needed for MP4)."""
    return importlib.util.find_spec("av") is not None


def save_mp4(frames: torch.Tensor, path: str | Path, fps: int = 16) -> Path:
    """Write [T, H, W, 3] frames as H.264 MP4 (requires PyAV)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _to_uint8(frames)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = data.shape[1] // 2 * 2, data.shape[2] // 2 * 2
        stream.pix_fmt = "yuv420p"
        for frame in data:
            crop = np.ascontiguousarray(frame[:stream.height, :stream.width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        container.mux(stream.encode())
    return path
