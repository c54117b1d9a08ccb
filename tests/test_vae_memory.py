"""Chunked VAE decoding: peak working memory does not grow with clip length.

Each measurement runs in a fresh interpreter with glibc's mmap threshold
fixed, so every large tensor is returned to the OS when freed and the peak
RSS above the starting point is the decoder's peak working set. The peak is
the process's own high-water mark (VmHWM, reset through /proc/self/clear_refs
after warm-up); getrusage's ru_maxrss would carry the parent's peak across
fork/exec. Frames are streamed with `decode_chunks` and dropped, as a video
writer would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                                reason="peak-RSS measurement needs Linux /proc")

SCRIPT = textwrap.dedent("""
    import sys, torch
    from uniworld_core.model.config import VAEConfig
    from uniworld_core.model.vae import WanVAE
    torch.manual_seed(0)
    torch.set_num_threads(1)
    frames, size = int(sys.argv[1]), int(sys.argv[2])
    vae = WanVAE(VAEConfig(base_dim=16)).eval()
    latents = torch.randn(1, 16, 1 + (frames - 1) // 4, size // 8, size // 8)
    # warm-up on one latent frame, so one-off allocations are not counted
    for _ in vae.decode_chunks(latents[:, :, :1]):
        pass
    def status_kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark to the current RSS
    before = status_kib("VmRSS")
    count = 0
    for chunk in vae.decode_chunks(latents):
        count += chunk.shape[2]
    assert count == frames, count
    print((status_kib("VmHWM") - before) * 1024)
""")


def peak_decode_bytes(frames: int, size: int = 128) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(frames), str(size)], env=env,
                            capture_output=True, text=True, timeout=600, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def test_decode_peak_memory_independent_of_length():
    # Noise from the allocator can only inflate a peak: keep the lower of two runs.
    short = min(peak_decode_bytes(9) for _ in range(2))
    long = min(peak_decode_bytes(33) for _ in range(2))
    # Decoding all 33 frames at once would need about 4x the short clip's peak.
    assert short > 4 * 2**20, f"measurement too small to be meaningful: {short} bytes"
    message = f"9 frames: {short / 2**20:.1f} MiB, 33 frames: {long / 2**20:.1f} MiB"
    assert long <= 1.15 * short + 2 * 2**20, message
