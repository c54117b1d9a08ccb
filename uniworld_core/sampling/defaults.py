"""The one home of the sampling defaults.

`REPORT` holds the technical report's settings for the real model (832x480,
49 frames at 16 fps, 50 Euler steps, CFG 5, shift 7, Fourier ratio 0.1).
Models with other needs derive theirs with `dataclasses.replace` (the tiny
preset here, the miniature model from its card). The nodes' widget defaults,
the command line, `VideoSettings` and `SamplerSettings` all read these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Defaults:
    """Default geometry and sampling settings of one model."""

    width: int = 832
    height: int = 480
    frames: int = 49
    fps: int = 16
    steps: int = 50
    cfg: float = 5.0
    shift: float = 7.0
    fourier_ratio: float = 0.1  # share of spectral energy left in the low band (inference value)
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def latent_grid(self, temporal: int = 4, spatial: int = 8) -> tuple[int, int, int]:
        """Latent (frames, height, width) of these settings for the Wan2.1 VAE's 4x8x8 compression."""
        return 1 + (self.frames - 1) // temporal, self.height // spatial, self.width // spatial


@dataclass(frozen=True)
class Limits:
    """What a setting may be: the command line checks it, the ComfyUI widgets use it as min/max."""

    low: float
    high: float
    meaning: str


LIMITS = {
    "width": Limits(16, 4096, "pixels, a multiple of 16"), "height": Limits(16, 4096, "pixels, a multiple of 16"),
    "frames": Limits(5, 1025, "frames, of the form 4k+1"), "steps": Limits(1, 1000, "Euler steps"),
    "cfg": Limits(1.0, 30.0, "guidance scale (1 = off)"), "shift": Limits(0.1, 50.0, "time shift"),
    "fourier_ratio": Limits(0.0, 1.0, "share of spectral energy"), "fps": Limits(1, 240, "frames per second"),
    "style_strength": Limits(0.0, 1.0, "style strength"), "seed": Limits(0, 2**64 - 1, "noise seed"),
}

REPORT = Defaults()
# Frames of one sampling run of a weight file when a longer video is asked for: Wan2.1's training length
# (81 = 5 s at 16 fps). Beyond it the video is made of continuations (--run-frames changes it).
LONGEST_RUN = 81
# The random-weight `tiny` stack: a quick run that proves the pipeline.
TINY = replace(REPORT, width=160, height=96, frames=17, steps=8)
