"""FSDP (accelerate's plugin, FSDP2) on two CPU processes with the shipped config.

accelerate switches its FSDP plugin on only for accelerator devices, so the
worker turns it on by hand (in both of accelerate's shared states) after
building the plugin from the environment
that `accelerate launch --config_file training/accelerate/fsdp.yaml` sets;
from there on the code path is the one a GPU run takes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from training.config import TrainConfig
from training.trainer import Trainer

CONFIG = dict(steps=2, lr=1e-2, lora_rank=4, seed=5, text_drop=0.5, grad_clip=1.0, warmup_steps=3,
              schedule="cosine")

WORKER = r"""
import os, sys, torch
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from test_training import clips, _model, _padded
from training.config import TrainConfig
from training.sharding import whole
from training.trainer import Trainer

out, mode, config = sys.argv[1], sys.argv[2], eval(sys.argv[3])
acc = Accelerator(cpu=True)
if os.environ.get("ACCELERATE_USE_FSDP") == "true":
    acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()
    acc.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
data = _padded(clips())
share = 4 // acc.num_processes
mine = {{k: v[acc.process_index * share:(acc.process_index + 1) * share] for k, v in data.items()}}

def params(trainer):
    return {{n: whole(p.detach()).clone() for n, p in trainer.params.items()}}

straight = Trainer(_model(), TrainConfig(mode=mode, **config), accelerator=acc)
straight.train_step(mine)
straight.save(out + "_checkpoint")
straight.train_step(mine)
# a fresh start from the same base file; in "full" mode a different base, which the checkpoint overwrites
resumed = Trainer(_model(seed=int(mode == "full")), TrainConfig(mode=mode, **config), accelerator=acc)
resumed.load(out + "_checkpoint")
resumed.train_step(mine)
result = {{"straight": params(straight), "resumed": params(resumed), "sharded": torch.tensor(
    [type(p).__name__ == "DTensor" for p in straight.dit.parameters()])}}
if acc.is_main_process:
    torch.save(result, out)
acc.wait_for_everyone()
acc.end_training()  # as training.run.train does: an exit with the process group alive can abort (SIGABRT)
# Once in some hundred runs a rank still aborted at exit ("terminate called without an active exception":
# a joinable C++ thread destroyed by the interpreter's teardown). Everything is written by now; leave
# without the static destructors.
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
"""


def _fsdp_environment() -> dict[str, str]:
    """The variables `accelerate launch` derives from the shipped FSDP config (2 processes, float32)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(REPO / "training/accelerate/fsdp.yaml"),
                                               "--num_processes", "2", "--mixed_precision", "no", "worker.py"])
    args, _, _ = _validate_launch_command(args)
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("FSDP_", "ACCELERATE_"))}


def _run(tmp_path, mode: str, fsdp: bool) -> dict:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO), tests=str(REPO / "tests")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    out = tmp_path / ("fsdp.pt" if fsdp else "one.pt")
    command = [sys.executable, str(script), str(out), mode, repr(CONFIG)]
    if fsdp:
        env.update(_fsdp_environment())
        command[:1] = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                       "--master_port", "29547"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_fsdp_two_processes_equal_one_process_and_resume_exactly(tmp_path, mode):
    one, fsdp = _run(tmp_path, mode, fsdp=False), _run(tmp_path, mode, fsdp=True)
    assert bool(fsdp["sharded"].all()) and not bool(one["sharded"].any()), "the DiT was not sharded"
    reference = one["straight"]
    assert reference.keys() == fsdp["straight"].keys()
    for name, value in reference.items():  # two steps through warmup: a schedule stepped per process shows
        assert torch.allclose(fsdp["straight"][name], value, atol=1e-5, rtol=1e-4), name
        assert torch.equal(fsdp["resumed"][name], fsdp["straight"][name]), f"{name} after resuming"
        assert torch.equal(one["resumed"][name], value), f"{name} after resuming (one process)"
    assert any(not torch.equal(v, torch.zeros_like(v)) for n, v in reference.items() if "up" in n or mode == "full")

    # an FSDP checkpoint names what it needs when a plain run tries to resume from it
    from test_training import _model
    with pytest.raises(ValueError, match="FSDP optimizer shards of 2 processes"):
        Trainer(_model(), TrainConfig(mode=mode, **CONFIG)).load(tmp_path / "fsdp.pt_checkpoint")
