"""Several processes, one generation or one training step (torch.distributed).

`groups` owns the process groups (start, join, the data x cfg x sequence
layout, backends and timeouts), `comm` the few collectives with their
gradients, `sequence` the DiT's sequence-parallel hook (Ulysses, or gathered
keys/values when the heads do not divide), `dit` sequence and CFG
parallelism for the sampler, `fsdp` weights sharded with FSDP2 for
inference, `vae` a tiled decode split across processes. May import `model`,
`quant` and the basics; `sampling`, `memory`, `weights` and everything above
may import it. Without a `Parallel` layout nothing here changes what one process computes.
"""

from .dit import cfg_parallel_velocity, install_sequence_parallel, sequence_parallel
from .fsdp import is_fsdp, shard_dit
from .groups import (
    BACKENDS,
    DEFAULT_TIMEOUT_S,
    Parallel,
    ProcessFailure,
    before_process_group,
    check_layout,
    join,
    launched,
    start,
)
from .sequence import GatheredKVAttention, SequenceParallel, UlyssesAttention, share_of
from .vae import decode_frames, decode_tiled

__all__ = [
    "Parallel", "ProcessFailure", "start", "join", "before_process_group", "launched", "check_layout",
    "BACKENDS", "DEFAULT_TIMEOUT_S",
    "SequenceParallel", "UlyssesAttention", "GatheredKVAttention", "share_of",
    "install_sequence_parallel", "sequence_parallel", "cfg_parallel_velocity", "is_fsdp", "shard_dit",
    "decode_tiled", "decode_frames",
]
