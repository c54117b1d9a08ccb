"""Trainable LoRA on the DiT's attention and FFN linears, exported in ComfyUI's key format."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

DEFAULT_TARGETS = re.compile(r"^blocks\.\d+\.((self_attn|cross_attn)\.[qkvo]|ffn\.[02])$")


class LoraSet(nn.Module):
    """LoRA factors (A: Kaiming, B: zero, so training starts from the base model) for matching linears."""

    def __init__(self, model: nn.Module, rank: int = 16, alpha: float = 16.0, dropout: float = 0.0,
                 targets: re.Pattern = DEFAULT_TARGETS):
        super().__init__()
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and targets.match(n)]
        self.down = nn.ParameterDict()
        self.up = nn.ParameterDict()
        for name in self.names:
            layer = model.get_submodule(name)
            key = name.replace(".", "__")
            down = torch.empty(rank, layer.in_features)
            nn.init.kaiming_uniform_(down, a=math.sqrt(5))
            self.down[key] = nn.Parameter(down)
            self.up[key] = nn.Parameter(torch.zeros(layer.out_features, rank))
        self._handles = [model.get_submodule(n).register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str):
        key = name.replace(".", "__")

        def hook(module, inputs, output):
            x = self.dropout(inputs[0]).to(self.down[key].dtype)
            return output + ((x @ self.down[key].T) @ self.up[key].T * self.scale).to(output.dtype)
        return hook

    def export(self, path: str | Path) -> Path:
        """`diffusion_model.<module>.lora_A/lora_B.weight` + `.alpha`: what ComfyUI and our loader read."""
        tensors = {}
        for name in self.names:
            key = name.replace(".", "__")
            tensors[f"diffusion_model.{name}.lora_A.weight"] = self.down[key].detach().float().cpu().contiguous()
            tensors[f"diffusion_model.{name}.lora_B.weight"] = self.up[key].detach().float().cpu().contiguous()
            tensors[f"diffusion_model.{name}.alpha"] = torch.tensor(float(self.alpha))
        save_file(tensors, str(path))
        return Path(path)
