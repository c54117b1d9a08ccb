"""One torchrun launch of the parallel tests, results saved by process 0.

    python -m torch.distributed.run --standalone --nproc-per-node W tests/parallel_worker.py FOLDER
    ... tests/parallel_worker.py FOLDER train MODE SEQUENCE CHECKPOINTING
    RANK=k WORLD_SIZE=2 ... python tests/parallel_worker.py FOLDER fail dead|hang TIMEOUT

The first form runs every sampling layout of W processes on the model files and `inputs.pt` that
tests/test_parallel.py wrote into FOLDER, and the tiled VAE decode, and writes `world<W>.pt`: the
latents (or the video) and what the layout looked like. The second runs one training step (under FSDP
when accelerate's FSDP variables are set) and writes `train<W>.pt`: the gradients and the loss. The
test compares both with one process making the same calls. The third starts a sequence-parallel
sampling run whose process 1 dies (or hangs) after joining: process 0 prints how its run ended.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from uniworld_core import parallel as P
from uniworld_core.model import VAEConfig, WanVAE
from uniworld_core.sampling import SamplerSettings, sample
from uniworld_core.weights import load

# (name, sequence, cfg, fsdp, model file): run for the world sizes whose processes they fill exactly
CASES = [
    ("sequence", None, 1, False, "heads2.safetensors"),  # sequence = the world size
    ("sequence_4_heads", None, 1, False, "heads4.safetensors"),
    ("cfg", None, 2, False, "heads2.safetensors"),  # sequence = world / 2
    ("cfg_fsdp", None, 2, True, "heads2.safetensors"),
    ("sequence_fsdp_gguf", None, 1, True, "heads2.gguf"),
    ("sequence_prefix", None, 1, False, "heads2.safetensors"),  # a continuation: clean frames before the noise
]
SETTINGS = SamplerSettings(steps=3, shift=3.0, guidance_scale=4.0)
TILE, OVERLAP = 6, 2


def tiny_vae() -> WanVAE:
    """The same random VAE in every process (and in the test)."""
    torch.manual_seed(7)
    return WanVAE(VAEConfig(base_dim=8)).eval()


def run_sampling(dit, inputs: dict, parallel=None, name: str = "") -> torch.Tensor:
    """The case's sampling run; `*_prefix` cases continue clean context frames (per-frame timesteps)."""
    prefix = inputs["prefix"] if name.endswith("_prefix") else None
    return sample(dit, inputs["noise"], inputs["start"], inputs["context"], inputs["negative"], SETTINGS,
                  parallel=parallel, prefix=prefix)


def _case(folder: Path, world: int, inputs: dict, name: str, sequence, cfg: int, fsdp: bool, file: str) -> dict:
    layout = P.start(world // cfg if sequence is None else sequence, cfg, "cpu", timeout_s=120)
    dit = load(folder / file, "dit").model.eval()
    if fsdp:
        P.shard_dit(dit, layout)
    P.install_sequence_parallel(dit, layout)  # what sample() would do, kept to report the attention used
    latents = run_sampling(dit, inputs, layout, name)
    params = list(dit.parameters())
    local = sum(p.to_local().numel() if P.is_fsdp(dit) else p.numel() for p in params)
    return {"latents": latents, "sharded": torch.tensor(P.is_fsdp(dit)),
            "local_share": torch.tensor(local / sum(p.numel() for p in params)),
            "mode": "none" if dit.sequence_parallel is None else dit.sequence_parallel.mode}


def step_gradients(mode: str, sequence: int, checkpointing: bool, accelerator=None) -> dict:
    """One training step of the tiny DiT on four synthetic clips: the gradients the optimizer is given."""
    from test_training import _model, _padded, clips

    from training.config import TrainConfig
    from training.sharding import whole
    from training.trainer import Trainer

    cfg = TrainConfig(mode=mode, steps=1, lr=1e-2, lora_rank=4, seed=5, text_drop=0.5, grad_clip=0.0,
                      batch_size=4, sequence_parallel=sequence, gradient_checkpointing=checkpointing)
    trainer = Trainer(_model(), cfg, accelerator=accelerator)
    grads = {}

    def keep(optimizer, args, kwargs):  # after backward and the gradient reduction, before the update
        grads.update({n: whole(p.grad).clone() for n, p in trainer.params.items()})

    trainer.scheduler.optimizer.register_step_pre_hook(keep)
    share = 4 // trainer.data_size
    data = {k: v[trainer.data_rank * share:(trainer.data_rank + 1) * share] for k, v in _padded(clips()).items()}
    loss = trainer.train_step(data)
    return {"grads": grads, "loss": torch.tensor(loss), "data_size": torch.tensor(trainer.data_size),
            "sharded": torch.tensor(any(type(p).__name__ == "DTensor" for p in trainer.dit.parameters()))}


def train(folder: Path, mode: str, sequence: int, checkpointing: bool) -> None:
    import os

    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    acc = Accelerator(cpu=True)
    if os.environ.get("ACCELERATE_USE_FSDP") == "true":  # as in test_fsdp: accelerate enables FSDP on GPUs only
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        acc.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    result = step_gradients(mode, sequence, checkpointing, acc)
    if acc.is_main_process:
        torch.save(result, folder / f"train{acc.num_processes}.pt")
    acc.wait_for_everyone()
    acc.end_training()  # as training.run.train does (an exit with the group alive can abort)


def fail(folder: Path, how: str, timeout_s: float) -> int:
    """Process 1 leaves (dies, or sleeps past the timeout) after joining; process 0 reports its failure."""
    import os
    import time

    layout = P.start(2, 1, "cpu", timeout_s)
    if layout.rank == 1:
        if how == "hang":
            time.sleep(timeout_s + 30)
        os._exit(3)
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    started = time.perf_counter()
    try:
        run_sampling(load(folder / "heads2.safetensors", "dit").model.eval(), inputs, layout)
    except Exception as exc:
        print(f"after {time.perf_counter() - started:.1f} s: {P.ProcessFailure.of(layout, exc)}", flush=True)
        os._exit(1)  # without the barrier of a clean close: the peer is gone
    return 0


def main(folder: Path) -> None:
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    world = int(__import__("os").environ["WORLD_SIZE"])
    results = {}
    for name, sequence, cfg, fsdp, file in CASES:
        results[name] = _case(folder, world, inputs, name, sequence, cfg, fsdp, file)
    layout = P.start(world, 1, "cpu", timeout_s=120)
    video = P.decode_tiled(tiny_vae(), inputs["vae_latents"], layout, TILE, OVERLAP)
    if layout.is_main:
        results["vae"] = {"video": video}
        torch.save(results, folder / f"world{world}.pt")
    layout.close()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "train":
        train(Path(sys.argv[1]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
    elif len(sys.argv) > 2 and sys.argv[2] == "fail":
        sys.exit(fail(Path(sys.argv[1]), sys.argv[3], float(sys.argv[4])))
    else:
        main(Path(sys.argv[1]))
