"""Training data: the official meta-JSON format, clips from videos (PyAV) or frame folders.

Each entry: {"path": video file or folder of frames, "cap": caption, optional
"style", "resolution": {"height", "width"}, "fps", "num_frames",
"cut": [first_frame, last_frame], "image": condition image}. Clips are resized
and centre-cropped to their aspect-ratio bucket, 4k+1 frames are sampled at
the training fps, and the condition image is the first frame unless "image"
names another (image-to-stylized-video: a photo conditioning a styled clip). A bad entry (missing file, clip too
short, unreadable video, no caption) is skipped with a logged reason and
counted; it never stops an epoch.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from uniworld_core.media import fit_image, load_image

log = logging.getLogger("uniworld.training")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_BUCKETS = ((480, 832), (832, 480), (624, 624), (544, 960), (960, 544))


@dataclass(frozen=True)
class ClipEntry:
    path: Path
    caption: str
    style: str | None = None
    fps: float | None = None
    size: tuple[int, int] | None = None  # (height, width) of the source, when given
    cut: tuple[int, int] | None = None
    image: Path | None = None  # condition image, when it is not the clip's first frame (I2SV)


def read_meta(meta_path: str | Path, root: str | Path | None = None) -> tuple[list[ClipEntry], Counter]:
    """Entries of a meta JSON file (a list of dicts); unusable ones are counted by reason."""
    meta_path = Path(meta_path)
    root = Path(root) if root else meta_path.parent
    skipped: Counter = Counter()
    entries = []
    for i, item in enumerate(json.loads(meta_path.read_text(encoding="utf-8"))):
        if not isinstance(item, dict) or not item.get("path"):
            skipped["no path"] += 1
            log.warning("meta entry %d skipped: no 'path'", i)
            continue
        if not str(item.get("cap", "")).strip():
            skipped["no caption"] += 1
            log.warning("meta entry %d (%s) skipped: no caption", i, item["path"])
            continue
        resolution = item.get("resolution")
        if isinstance(resolution, dict):
            resolution = (int(resolution["height"]), int(resolution["width"]))
        elif resolution is not None:
            resolution = (int(resolution[0]), int(resolution[1]))
        cut = tuple(int(v) for v in item["cut"]) if item.get("cut") else None
        image = root / item["image"] if item.get("image") else None
        entries.append(ClipEntry(root / item["path"], str(item["cap"]), item.get("style"),
                                 float(item["fps"]) if item.get("fps") else None, resolution, cut, image))
    return entries, skipped


def bucket_for(height: int, width: int, buckets=DEFAULT_BUCKETS) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to the clip's."""
    aspect = width / height
    return min(buckets, key=lambda hw: abs(hw[1] / hw[0] - aspect))


class SkipClip(Exception):
    """An entry that cannot become a training clip: a kind (for the counts) and the reason."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def _read_frames(entry: ClipEntry) -> tuple[list[torch.Tensor], float | None]:
    if not entry.path.exists():
        raise SkipClip("missing file", f"missing file {entry.path}")
    if entry.path.is_dir():
        files = sorted(p for p in entry.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return [load_image(p) for p in files], entry.fps
    try:
        import av
    except ImportError as exc:
        raise SkipClip("no video reader", "PyAV is not installed (pip install av) to read videos") from exc
    try:
        with av.open(str(entry.path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else entry.fps
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")).float() / 255 for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise SkipClip("corrupt video", f"unreadable video ({exc.__class__.__name__})") from exc
    return frames, fps


def sample_indices(total: int, source_fps: float | None, train_fps: float, count: int,
                   start: int = 0) -> list[int]:
    """`count` frame indices at `train_fps` from a clip of `total` frames at `source_fps`."""
    stride = (source_fps / train_fps) if source_fps else 1.0
    indices = [start + round(i * stride) for i in range(count)]
    if not indices or indices[-1] >= start + total:
        raise SkipClip("too short", f"clip of {total} frames is shorter than the {count} frames needed "
                       f"at {train_fps:g} fps")
    return indices


class ClipDataset(torch.utils.data.Dataset):
    """Clips as {"video": [3, F, H, W] in [-1, 1], "caption", "style"}; None for skipped entries."""

    def __init__(self, entries: list[ClipEntry], num_frames: int = 49, train_fps: float = 16,
                 buckets=DEFAULT_BUCKETS):
        if (num_frames - 1) % 4:
            raise ValueError(f"num_frames must be 4k+1, got {num_frames}")
        self.entries, self.num_frames, self.train_fps, self.buckets = entries, num_frames, train_fps, buckets
        self.skipped: Counter = Counter()

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict | None:
        entry = self.entries[index]
        try:
            frames, fps = _read_frames(entry)
            if not frames:
                raise SkipClip("empty clip", "no frames")
            first, last = entry.cut or (0, len(frames))
            frames = frames[first:last]
            picks = sample_indices(len(frames), fps, self.train_fps, self.num_frames)
            height, width = bucket_for(*frames[0].shape[:2], self.buckets)
            video = torch.cat([fit_image(frames[i], width, height) for i in picks]).permute(1, 0, 2, 3)
            item = {"video": video, "caption": entry.caption, "style": entry.style}
            if entry.image is not None:
                if not entry.image.is_file():
                    raise SkipClip("missing file", f"missing condition image {entry.image}")
                item["image"] = fit_image(load_image(entry.image), width, height)[0]  # [3, H, W]
        except SkipClip as reason:
            self.skipped[reason.kind] += 1
            log.warning("clip %s skipped: %s", entry.path, reason)
            return None
        return item

