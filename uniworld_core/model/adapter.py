"""The EncoderAdapter of Uniworld-OSP2.0: Qwen2.5-VL hidden states -> DiT context width.

Linear(3584 -> 4096) -> GELU -> Linear(4096 -> 4096), the only module the
OSP2.0 stage trains.
"""

from __future__ import annotations

import torch
from torch import nn

VLM_HIDDEN = 3584  # Qwen2.5-VL-7B hidden size
DIT_TEXT_DIM = 4096  # the DiT's text_embedding input width


class EncoderAdapter(nn.Module):
    """Linear(vlm_hidden -> hidden) -> GELU -> Linear(hidden -> out): VLM features to DiT context."""

    def __init__(self, in_dim: int = VLM_HIDDEN, hidden: int = DIT_TEXT_DIM, out_dim: int = DIT_TEXT_DIM):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(features.to(self.fc1.weight.dtype)))).float()
