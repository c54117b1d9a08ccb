"""Several processes give what one process gives (issue #24), on the CPU with gloo under torchrun.

Sequence parallel (Ulysses, and gathered K/V when the heads do not divide), CFG parallel, both, FSDP2
(also on GGUF weights), the tiled VAE decode and a training step (plain and under accelerate's FSDP2)
on 2 and 4 processes against one process, with a token count that no world size divides; the command
line's main job with 2 (with block swap and the Wan caches) and 4 processes against one process; a dead or
hung process ends the run with a message. Each world size is one torchrun launch that runs all its
layouts (tests/parallel_worker.py).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
from conftest import REPO, relative_error
from parallel_worker import CASES, OVERLAP, TILE, run_sampling, step_gradients, tiny_vae
from safetensors.torch import save_file
from test_fsdp import _fsdp_environment

from uniworld_core.__main__ import main
from uniworld_core.errors import InputError
from uniworld_core.media import read_webp
from uniworld_core.model import DiTConfig, WanDiT
from uniworld_core.weights import load, quantize_file

TOLERANCE = 1e-5  # relative (max |difference| / max |one process|), float32: the bar
GRID = (3, 6, 10)  # latent frames, height, width: 3 x 3 x 5 = 45 tokens, divided by neither 2 nor 4
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "TORCHELASTIC", "ACCELERATE_", "FSDP_")


def _environment(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARIABLES)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def _launch(processes: int, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               *args]
    done = subprocess.run(command, env=_environment(env), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def _write_dit(path, heads: int) -> None:
    torch.manual_seed(heads)
    cfg = DiTConfig(dim=64, ffn_dim=128, num_heads=heads, num_layers=2, freq_dim=32, text_dim=24, text_len=7)
    dit = WanDiT(cfg)
    with torch.no_grad():  # wake the zero-initialised FlashI2V outputs so every path carries signal
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, str(path),
              metadata={"dit_config": cfg.to_json()})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Model files and inputs shared by the launches and the one-process references."""
    folder = tmp_path_factory.mktemp("parallel")
    _write_dit(folder / "heads2.safetensors", 2)
    _write_dit(folder / "heads4.safetensors", 4)
    quantize_file(folder / "heads2.safetensors", folder / "heads2.gguf", "Q8_0")
    gen = torch.Generator().manual_seed(3)
    inputs = {"noise": torch.randn(1, 16, *GRID, generator=gen), "start": torch.randn(1, 16, 1, *GRID[1:],
              generator=gen), "context": torch.randn(1, 7, 24, generator=gen),
              "negative": torch.randn(1, 7, 24, generator=gen), "vae_latents": torch.randn(1, 16, 2, 8, 10,
                                                                                             generator=gen)}
    inputs["prefix"] = torch.randn(1, 16, 2, *GRID[1:], generator=gen)  # 5 x 15 = 75 tokens: uneven too
    torch.save(inputs, folder / "inputs.pt")
    return folder


@pytest.fixture(scope="module")
def launches(folder):
    """world size -> what its launch saved (each launched once, when a test first needs it)."""
    saved = {}

    def get(world: int) -> dict:
        if world not in saved:
            _launch(world, "tests/parallel_worker.py", str(folder))
            saved[world] = torch.load(folder / f"world{world}.pt", weights_only=True)
        return saved[world]
    return get


@contextmanager
def _one_thread():
    """The one-process references run single-threaded, like each torchrun process (OMP_NUM_THREADS=1): on
    a loaded 2-core machine a second thread per process slows small convolutions down twentyfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _one_process(folder, file: str, name: str = "") -> torch.Tensor:
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    with _one_thread():
        return run_sampling(load(folder / file, "dit").model.eval(), inputs, name=name)


# what each case's self-attention must be: Ulysses where the heads divide by the sequence group
EXPECTED_MODE = {(2, "sequence"): "ulysses", (2, "sequence_4_heads"): "ulysses", (2, "cfg"): "none",
                 (2, "cfg_fsdp"): "none", (2, "sequence_fsdp_gguf"): "ulysses",
                 (4, "sequence"): "kv_gather", (4, "sequence_4_heads"): "ulysses", (4, "cfg"): "ulysses",
                 (4, "cfg_fsdp"): "ulysses", (4, "sequence_fsdp_gguf"): "kv_gather",
                 (2, "sequence_prefix"): "ulysses", (4, "sequence_prefix"): "kv_gather"}


@pytest.mark.parametrize("world", [2, 4])
def test_sampling_on_several_processes_equals_one_process(folder, launches, world):
    results = launches(world)
    tokens = GRID[0] * (GRID[1] // 2) * (GRID[2] // 2)
    assert tokens % world, "the inputs must exercise an uneven split"
    for name, _, _, _, file in CASES:
        case = results[name]
        assert case["mode"] == EXPECTED_MODE[world, name], name
        error = relative_error(case["latents"], _one_process(folder, file, name))
        assert error <= TOLERANCE, f"{name} on {world} processes: relative error {error:.2e}"


@pytest.mark.parametrize("world", [2, 4])
def test_fsdp_keeps_a_share_of_the_weights_on_each_process(launches, world):
    for name, _, _, fsdp, _ in CASES:
        case = launches(world)[name]
        assert bool(case["sharded"]) == fsdp, name
        share = float(case["local_share"])
        # 1/world of every tensor; FSDP pads dim 0 to a multiple of the world, so small tensors add a little
        assert (1 / world <= share < 1.15 / world) if fsdp else share == 1.0, f"{name}: {share:.3f}"


@pytest.mark.parametrize("world", [2, 4])
def test_tiled_vae_decode_shared_by_processes_equals_one_process(folder, launches, world):
    latents = torch.load(folder / "inputs.pt", weights_only=True)["vae_latents"]
    with _one_thread():
        expected = tiny_vae().decode_tiled(latents, TILE, OVERLAP)
    error = relative_error(launches(world)["vae"]["video"], expected)
    assert error <= TOLERANCE, f"relative error {error:.2e}"


def _gradient_errors(got: dict, expected: dict) -> dict[str, float]:
    """Per tensor: max |difference| / the tensor's scale, floored at 1e-3 of the largest gradient.

    The floor keeps gradients that are zero in exact arithmetic (a key bias: softmax ignores a constant
    shift) from turning rounding noise into a large relative error.
    """
    floor = 1e-3 * max(float(g.abs().max()) for g in expected.values())
    return {n: float((got[n] - g).abs().max()) / max(float(g.abs().max()), floor) for n, g in expected.items()}


@pytest.mark.parametrize("world,mode,sequence,checkpointing,fsdp", [
    (2, "lora", 2, False, False),  # sequence parallel alone, LoRA
    (4, "full", 2, True, True),  # 2 data shares x 2 sequence shares under accelerate's FSDP2, checkpointing
])
def test_training_step_gradients_equal_one_process(folder, world, mode, sequence, checkpointing, fsdp):
    env = _fsdp_environment() if fsdp else {}
    _launch(world, "tests/parallel_worker.py", str(folder), "train", mode, str(sequence), str(int(checkpointing)),
            env=env)
    got = torch.load(folder / f"train{world}.pt", weights_only=True)
    with _one_thread():
        expected = step_gradients(mode, 1, False)
    assert bool(got["sharded"]) == fsdp and int(got["data_size"]) == world // sequence
    assert got["grads"].keys() == expected["grads"].keys()
    errors = _gradient_errors(got["grads"], expected["grads"])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{worst}: {errors[worst]:.2e}"
    if world == sequence:  # one data share: process 0's loss is the whole batch's (else it is its share's)
        assert abs(float(got["loss"]) - float(expected["loss"])) <= TOLERANCE * abs(float(expected["loss"]))


def _frames_match(a: torch.Tensor, b: torch.Tensor) -> None:
    """The same video as far as a lossy WEBP can tell: PSNR of at least 40 dB between the two files.

    The latents agree to ~1e-6 (the tests above); a pixel whose value sits on a rounding boundary can
    still land on the other level, and the lossy encoder then codes its block differently (up to ~10
    levels on the tiny preset's noise). A wrong or missing share of the work gives 10-20 dB.
    """
    assert a.shape == b.shape
    mse = float(((a - b) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)  # frames in 0..1
    assert psnr >= 40, f"PSNR {psnr:.1f} dB"


def test_main_job_on_two_processes_writes_the_same_video(tmp_path, capsys):
    from uniworld_core.presets import miniature

    if not miniature.available():
        pytest.skip("the miniature model is not installed")
    flags = ["--steps", "6", "--frames", "9", "--seed", "2", "--cache", "wan"]  # the Wan caches, in both
    with _one_thread():
        assert main(["generate", *flags, "--out", str(tmp_path / "one.webp")]) == 0
    one = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cache wan:"))
    assert "0 block self-attentions reused" not in one, one  # the attention cache did work
    # each process block-swaps its copy of the DiT: swap and sequence parallelism compose
    done = _launch(2, "-m", "uniworld_core", "generate", *flags, "--sequence-parallel", "2", "--blocks-to-swap", "2",
                   "--out", str(tmp_path / "two.webp"))
    assert "sequence parallel x2" in done.stdout and "2 swapped" in done.stdout, done.stdout
    assert one in done.stdout, (one, done.stdout)  # the same forwards run and reused as in one process
    _frames_match(read_webp(tmp_path / "two.webp"), read_webp(tmp_path / "one.webp"))


def test_main_job_on_four_processes_with_every_option(tmp_path, capsys):
    """Sequence x CFG parallel, FSDP and the tiled decode shared by processes, against one process."""
    flags = ["--preset", "tiny", "--width", "128", "--height", "128", "--frames", "5", "--steps", "2",
             "--vae-tile", "12"]
    with _one_thread():
        assert main(["generate", *flags, "--out", str(tmp_path / "one.webp")]) == 0
    done = _launch(4, "-m", "uniworld_core", "generate", *flags, "--sequence-parallel", "2", "--cfg-parallel",
                   "--fsdp", "--out", str(tmp_path / "four.webp"))
    assert "sequence parallel x2, CFG parallel x2, DiT sharded (FSDP2)" in done.stdout, done.stdout
    _frames_match(read_webp(tmp_path / "four.webp"), read_webp(tmp_path / "one.webp"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["dead", "hang"])
def test_a_process_that_dies_or_hangs_ends_the_run_with_a_message(folder, how):
    """Without torchrun's agent to clean up: the survivor's own error (or timeout) ends it, within seconds."""
    port, timeout_s = str(_free_port()), 3
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, "tests/parallel_worker.py", str(folder), "fail", how,
                                   str(timeout_s)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=_environment({"RANK": str(r), "LOCAL_RANK": str(r),
                                                               "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                                               "MASTER_PORT": port}))
                 for r in (0, 1)]
    out, _ = processes[0].communicate(timeout=120)
    elapsed = time.perf_counter() - started
    processes[1].kill()
    processes[1].wait()
    assert processes[0].returncode == 1, out
    assert f"process 0 of 2 stopped: another process of the run stopped or did not answer within {timeout_s} s" \
        in out, out
    assert elapsed < 60, f"the survivor took {elapsed:.0f} s to stop"


def test_fsdp_refuses_a_block_swapped_dit_before_any_collective():
    from uniworld_core.memory import place_dit
    from uniworld_core.parallel import shard_dit

    torch.manual_seed(0)
    dit = WanDiT(DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, freq_dim=32, text_dim=24))
    place_dit(dit, "cpu", blocks_to_swap=1)
    with pytest.raises(InputError, match="block-swapped"):
        shard_dit(dit, parallel=None)  # refused before the layout is used: no process group needed
