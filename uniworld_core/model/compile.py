"""Regional compilation: the DiT's repeated block compiled once by torch.compile and run by every block.

A DiT is 30-40 copies of one block, so compiling the block (not the whole
model) costs one compilation instead of forty and leaves the embeddings,
the head and block swap's hooks in eager Python. The block is compiled
with `fullgraph=True` (a graph break is an error, not a silent slowdown) and
static shapes: within a sampling run every step has the same shapes (the
timestep is a tensor, and conditional and unconditional passes run as one
batch), so a run compiles once; a new video size compiles once more. GGUF
and fp8 layers trace through their dequantisation, which the compiler fuses
into the matmul's producer; swapped blocks get their weights from block
swap's hooks before the compiled code runs.

Compilation happens at the first forward. If it fails (no C++ compiler for
inductor on the CPU, no Triton on the GPU, an operator the compiler cannot
handle), the block runs eagerly from then on and a message says why.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .attention import MeasuredAttention
from .dit import WanBlock, WanDiT

LOG = logging.getLogger("uniworld_core")


@dataclass
class CompileState:
    """What compiling a model's blocks did: how many graphs were compiled, and whether it fell back."""

    backend: str
    compiles: int = 0
    failed: str | None = None  # why it runs eagerly, when it does

    def summary(self) -> str:
        if self.failed:
            return f"torch.compile ({self.backend}) failed, the DiT blocks run uncompiled: {self.failed}"
        return f"DiT blocks compiled with torch.compile ({self.backend}); {self.compiles} graph(s) so far"


def _counting(backend: str | Callable, state: CompileState) -> Callable:
    """A torch.compile backend that counts the graphs it is given and hands them to `backend`."""
    from torch._dynamo import lookup_backend

    inner = lookup_backend(backend) if isinstance(backend, str) else backend

    def compile_graph(graph_module, example_inputs):
        state.compiles += 1
        return inner(graph_module, example_inputs)
    return compile_graph


def _measuring(attentions) -> bool:
    """Whether a block's attention kernels (cross, then self: perhaps a sequence-parallel wrapper) measure."""
    return any(isinstance(getattr(a, "inner", a), MeasuredAttention) for a in attentions if a is not None)


class _CompiledBlock:
    """One compiled WanBlock.forward shared by every block; falls back to eager on the first failure."""

    def __init__(self, state: CompileState, backend: str | Callable, mode: str | None, log: Callable[[str], None]):
        self.state, self.log = state, log
        options = {"mode": mode} if mode else {}
        self.compiled = torch.compile(WanBlock.forward, backend=_counting(backend, state), fullgraph=True,
                                      dynamic=False, **options)
        self.seen: set[tuple] = set()

    def __call__(self, block: WanBlock, *args):
        if self.state.failed is not None or _patched(block):
            return WanBlock.forward(block, *args)
        x, context = args[0], args[2]
        signature = (tuple(x.shape), tuple(context.shape), x.dtype, x.device)
        if _measuring(args[4:]) and signature not in self.seen:
            self.seen.add(signature)
            # `measure` attention times its candidates on first use, which a traced graph cannot do:
            # the first block of a new size runs eagerly and the compiled code keeps its choice
            return WanBlock.forward(block, *args)
        try:
            return self.compiled(block, *args)
        except Exception as exc:  # the compiler reports failures as many exception types
            output = WanBlock.forward(block, *args)  # when the inputs are at fault, this raises the real error
            self.state.failed = _reason(exc)
            self.log(self.state.summary())
            return output


def _patched(block: WanBlock) -> bool:
    """Whether something replaced an attention's forward for now (a sampling cache reusing self-attention
    outputs keeps per-step Python state, which a traced graph would recompile for at every step)."""
    return "forward" in block.self_attn.__dict__ or "forward" in block.cross_attn.__dict__


def _reason(exc: BaseException) -> str:
    """The innermost cause of a compiler failure, in one line (the wrappers' own messages say little)."""
    while (inner := getattr(exc, "inner_exception", None) or exc.__cause__) is not None:
        exc = inner
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def compile_blocks(model: WanDiT, backend: str | Callable = "inductor", mode: str | None = None,
                   log: Callable[[str], None] | None = None) -> CompileState:
    """Compile `model`'s blocks (one graph shared by all of them); returns the state, also `model.compile_state`.

    `backend` is a torch.compile backend ("inductor" by default; "eager" or
    "aot_eager" only trace, for tests); `mode` a torch.compile mode such as
    "max-autotune-no-cudagraphs". Calling it again replaces the earlier compilation.
    """
    log = log or LOG.info
    uncompile_blocks(model)
    # every compilation of the block (each video size, each model compiled in this process) is one cache
    # entry of WanBlock.forward; past torch's default of 8, dynamo would silently run it eagerly
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    name = backend if isinstance(backend, str) else getattr(backend, "__name__", "custom")
    state = CompileState(name)
    runner = _CompiledBlock(state, backend, mode, log)
    for block in model.blocks:
        block.forward = functools.partial(runner, block)  # an instance attribute: hooks still run around it
    model.compile_state = state
    log(state.summary())
    return state


def uncompile_blocks(model: WanDiT) -> None:
    """Back to eager blocks (a no-op for a model that was never compiled)."""
    for block in model.blocks:
        block.__dict__.pop("forward", None)
    model.__dict__.pop("compile_state", None)


def graph_breaks(block: WanBlock, *args) -> int:
    """How many graph breaks torch.compile meets in one block's forward with these inputs."""
    explanation = torch._dynamo.explain(WanBlock.forward)(block, *args)
    return explanation.graph_break_count
