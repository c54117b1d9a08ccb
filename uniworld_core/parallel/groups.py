"""The processes of a run and their groups: the one place that starts and ends torch.distributed.

A run of W processes (started by `torchrun` or `accelerate launch`, which set
RANK, LOCAL_RANK and WORLD_SIZE) is a grid of data x cfg x sequence ranks,
rank = (d * cfg + c) * sequence + s:

* the `sequence` processes of one row split the video tokens of one DiT call;
* the `cfg` rows of a sampling run compute the conditional (row 0) and the
  unconditional (row 1) branch of classifier-free guidance;
* `data` rows (training) take different samples of the batch.

Generation uses data = 1, training cfg = 1. Backends: NCCL on CUDA, HCCL on
Ascend (`torch_npu`), gloo on the CPU. Every group gets the run's timeout, so
a process whose peer died or hangs stops with an error instead of waiting.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import InputError

BACKENDS = {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}
DEFAULT_TIMEOUT_S = 1800  # a collective waits this long for its slowest process (loading a 14B counts)
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass
class Parallel:
    """One process's place in the run and the groups it belongs to."""

    rank: int
    world: int
    device: torch.device
    sequence: int = 1
    cfg: int = 1
    sequence_group: object | None = None  # a ProcessGroup; None when sequence == 1
    cfg_group: object | None = None
    owns_world: bool = False  # close() ends torch.distributed (False when accelerate started it)
    timeout_s: float = DEFAULT_TIMEOUT_S
    _meshes: dict = field(default_factory=dict, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def data(self) -> int:
        return self.world // (self.sequence * self.cfg)

    @property
    def data_rank(self) -> int:
        return self.rank // (self.sequence * self.cfg)

    @property
    def cfg_rank(self) -> int:
        return self.rank // self.sequence % self.cfg

    @property
    def sequence_rank(self) -> int:
        return self.rank % self.sequence

    def world_mesh(self):
        """A 1-D DeviceMesh over every process (what FSDP2 shards over); built once."""
        if "world" not in self._meshes:
            from torch.distributed.device_mesh import init_device_mesh

            self._meshes["world"] = init_device_mesh(self.device.type, (self.world,))
        return self._meshes["world"]

    def describe(self) -> str:
        parts = [f"{self.world} processes ({BACKENDS.get(self.device.type, '?')})"]
        if self.sequence > 1:
            parts.append(f"sequence parallel x{self.sequence}")
        if self.cfg > 1:
            parts.append("CFG parallel x2")
        return ", ".join(parts)

    @contextmanager
    def main_prints(self):
        """Inside, only the main process writes to stdout (the others' prints are dropped; stderr stays)."""
        if self.is_main:
            yield
            return
        with open(os.devnull, "w") as sink, redirect_stdout(sink):
            yield

    def close(self) -> None:
        """End torch.distributed when this object started it, once every process got here."""
        if self.owns_world and dist.is_initialized():
            dist.barrier()  # no process tears its connections down while a peer still uses them
            dist.destroy_process_group()


class ProcessFailure(RuntimeError):
    """A process of a parallel run stopped: which one, and why (its own error or a peer that went away)."""

    def __init__(self, cause: BaseException, rank: int, world: int, timeout_s: float):
        why = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        if isinstance(cause, dist.DistError) or any(w in why.lower() for w in ("timed out", "connection", "peer")):
            why = (f"another process of the run stopped or did not answer within {timeout_s:g} s; its own "
                   f"message names the cause (here: {type(cause).__name__}: {why})")
        super().__init__(f"process {rank} of {world} stopped: {why}")

    @classmethod
    def of(cls, parallel: Parallel, cause: BaseException) -> ProcessFailure:
        return cls(cause, parallel.rank, parallel.world, parallel.timeout_s)


def launched() -> tuple[int, int, int] | None:
    """(rank, local rank, world size) set by torchrun / accelerate launch, or None in a plain process."""
    if not all(name in os.environ for name in LAUNCH_VARIABLES):
        return None
    return tuple(int(os.environ[name]) for name in LAUNCH_VARIABLES)


def check_layout(world: int, sequence: int, cfg: int) -> None:
    """An InputError unless `world` processes form whole rows of `cfg` x `sequence`."""
    if sequence < 1 or cfg not in (1, 2):
        raise InputError(f"sequence parallel {sequence}, CFG parallel {cfg}",
                         "a sequence-parallel size of at least 1 and CFG parallel 1 or 2")
    if world % (sequence * cfg):
        raise InputError(f"{world} processes for sequence parallel {sequence} x CFG parallel {cfg}",
                         f"a multiple of {sequence * cfg} processes",
                         f"Launch with torchrun --nproc-per-node {sequence * cfg}.")


def process_device(kind: str, local_rank: int) -> torch.device:
    """This process's device: accelerator number LOCAL_RANK, or the CPU."""
    if kind not in BACKENDS:
        raise InputError(f"a multi-process run on {kind}", "cuda, npu or cpu (torch.distributed has no "
                         f"backend for {kind})", "Use one process on this device.")
    if kind == "cpu":
        return torch.device("cpu")
    module = torch.cuda if kind == "cuda" else getattr(torch, "npu", None)
    count = module.device_count() if module is not None else 0
    if local_rank >= count:
        raise InputError(f"process {local_rank} on a machine with {count} {kind} devices",
                         "one device per process", "Launch no more processes per node than devices.")
    module.set_device(local_rank)
    return torch.device(kind, local_rank)


def _row_groups(world: int, sequence: int, cfg: int, timeout: timedelta):
    """(this process's sequence group, its cfg group); the ranks sharing every other coordinate."""
    rank = dist.get_rank()
    rows = [list(range(start, start + sequence)) for start in range(0, world, sequence)]
    columns = [[block + c * sequence + s for c in range(cfg)] for block in range(0, world, sequence * cfg)
               for s in range(sequence)]
    groups = []
    for size, members in ((sequence, rows), (cfg, columns)):
        if size == 1:
            groups.append(None)
        elif size == world:
            groups.append(dist.group.WORLD)
        else:  # every process creates every group (torch.distributed requires it), then keeps its own
            made = [dist.new_group(ranks, timeout=timeout) for ranks in members]
            groups.append(next(g for g, ranks in zip(made, members) if rank in ranks))
    return groups[0], groups[1]


def before_process_group() -> None:
    """Call before a process group is created (torch.distributed.init_process_group, `Accelerator()`).

    torch._dynamo, imported after the default group exists (an optimizer's `load_state_dict` or
    torch.compile import it), keeps a reference to that group, so `destroy_process_group()` no longer joins
    gloo's worker threads; one of them can then free a tensor while the interpreter shuts down and abort the
    process ("terminate called without an active exception", SIGABRT), so a finished run reports a failure.
    Imported first, it holds none.
    """
    import torch._dynamo  # noqa: F401


def start(sequence: int = 1, cfg: int = 1, device_kind: str = "cpu",
          timeout_s: float = DEFAULT_TIMEOUT_S) -> Parallel:
    """Join the run started by torchrun: init the process group on this process's device, make the groups."""
    found = launched()
    if found is None:
        raise InputError("a parallel run in a single process (RANK, LOCAL_RANK, WORLD_SIZE are not set)",
                         "a launch by torchrun or accelerate launch",
                         f"Run torchrun --nproc-per-node {sequence * cfg} -m uniworld_core generate ...")
    rank, local_rank, world = found
    check_layout(world, sequence, cfg)
    device = process_device(device_kind, local_rank)
    timeout = timedelta(seconds=timeout_s)
    try:
        if not dist.is_initialized():
            before_process_group()
            dist.init_process_group(BACKENDS[device.type], timeout=timeout, rank=rank, world_size=world)
        return _build(device, sequence, cfg, timeout, owns_world=True)
    except Exception as exc:  # rendezvous: a missing variable, an unreachable address, a peer that never came
        raise ProcessFailure(exc, rank, world, timeout_s) from exc


def join(sequence: int, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> Parallel:
    """The groups of an already started run (accelerate's) split into data x sequence rows (training)."""
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialised: launch with accelerate launch or torchrun")
    check_layout(dist.get_world_size(), sequence, 1)
    return _build(device, sequence, 1, timedelta(seconds=timeout_s), owns_world=False)


def _build(device: torch.device, sequence: int, cfg: int, timeout: timedelta, owns_world: bool) -> Parallel:
    world = dist.get_world_size()
    sequence_group, cfg_group = _row_groups(world, sequence, cfg, timeout)
    return Parallel(dist.get_rank(), world, device, sequence, cfg, sequence_group, cfg_group, owns_world,
                    timeout.total_seconds())
