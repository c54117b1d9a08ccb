"""Where weights live: offload between uses, block swap, the VRAM planner, placement.

`offload` (the one swap mechanism: a unit of weights visits the compute
device and goes back; `Placement` for whole encoders and the VAE),
`blockswap` (DiT blocks streamed just in time on a copy stream), `planner`
(how many blocks fit a budget) and `placement` (`place_dit`: the one function
that puts a loaded DiT on a device under a budget). May import `model`,
`quant` and the basics; not its peers `sampling` and `weights`.
"""

from .blockswap import BlockSwap, SwapStats
from .offload import Placement, release_cached_memory
from .placement import AUTO, DiTPlacement, free_memory, place_dit
from .planner import MemoryPlan, least_generation_bytes, plan_block_swap

__all__ = [
    "BlockSwap", "SwapStats", "Placement", "release_cached_memory", "AUTO", "DiTPlacement", "free_memory",
    "place_dit", "MemoryPlan", "plan_block_swap", "least_generation_bytes",
]
