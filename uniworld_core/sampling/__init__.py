"""Sampling: the defaults, the shifted sigma schedule, the FlashI2V Euler sampler and the pipeline.

`defaults` is the one home of the sampling defaults (the report's 832x480,
49 frames, 50 steps, CFG 5, shift 7, Fourier ratio 0.1); `schedule` the
sigmas, `sampler` the guided Euler loop with latent shifting, `pipeline`
image -> StartFrame -> latents -> frames. May import `model`, `quant` and the
basics; not its peers `memory` and `weights`.
"""

from .cache import POLICIES, SCHEDULE_SUFFIX, CacheSettings, CacheStats, choose_wan_schedule
from .continuation import (
    ContinuationSettings,
    JoinSmoother,
    decode_chunked,
    extend_latents,
    frame_index,
    generate_long,
    smooth_joins,
)
from .defaults import LIMITS, LONGEST_RUN, REPORT, TINY, Defaults, Limits
from .pipeline import StartFrame, VideoSettings, decode_frames, encode_start, generate, generate_latents, latent_shape
from .sampler import SamplerSettings, sample
from .schedule import dynamic_shift, inference_sigmas, sample_training_sigmas, timesteps_from_sigmas, training_pair

__all__ = [
    "POLICIES", "SCHEDULE_SUFFIX", "CacheSettings", "CacheStats", "choose_wan_schedule", "LIMITS", "Limits",
    "REPORT", "TINY", "LONGEST_RUN", "Defaults", "StartFrame", "VideoSettings", "decode_frames", "encode_start",
    "generate",
    "generate_latents", "latent_shape", "SamplerSettings", "sample", "inference_sigmas",
    "timesteps_from_sigmas", "training_pair", "dynamic_shift", "sample_training_sigmas",
    "ContinuationSettings", "generate_long", "decode_chunked", "extend_latents", "JoinSmoother", "smooth_joins",
    "frame_index",
]
