"""Key layouts: diffusers (and ComfyUI-prefixed) state dicts -> official Wan names.

The official names are the model's own; other layouts are renamed on load.
Each mapping is a list of (pattern, replacement) regex rules applied to the
first matching rule only, so the tables read as a dictionary of facts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

# diffusers WanTransformer3DModel -> official Wan DiT.
DIFFUSERS_DIT_RULES: list[tuple[str, str]] = [
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (r"^blocks\.(\d+)\.attn1\.to_([qkv])\.", r"blocks.\1.self_attn.\2."),
    (r"^blocks\.(\d+)\.attn1\.(norm_[qk])\.", r"blocks.\1.self_attn.\2."),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"^blocks\.(\d+)\.attn2\.to_([qkv])\.", r"blocks.\1.cross_attn.\2."),
    (r"^blocks\.(\d+)\.attn2\.(norm_[qk])\.", r"blocks.\1.cross_attn.\2."),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"^scale_shift_table$", "head.modulation"),
]

# diffusers AutoencoderKLWan -> official Wan VAE, except the decoder's nested
# up_blocks, which need the block count (see `diffusers_vae_to_official`).
DIFFUSERS_VAE_RULES: list[tuple[str, str]] = [
    (r"^quant_conv\.", "conv1."),
    (r"^post_quant_conv\.", "conv2."),
    (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
    (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.middle.0."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.middle.1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.middle.2."),
    (r"^encoder\.down_blocks\.", "encoder.downsamples."),
]

# Inside a residual block (diffusers name -> official Sequential index).
RESIDUAL_RULES: list[tuple[str, str]] = [
    (r"\.norm1\.gamma$", ".residual.0.gamma"),
    (r"\.conv1\.(weight|bias)$", r".residual.2.\1"),
    (r"\.norm2\.gamma$", ".residual.3.gamma"),
    (r"\.conv2\.(weight|bias)$", r".residual.6.\1"),
    (r"\.conv_shortcut\.", ".shortcut."),
]


_IN_RESIDUAL_BLOCK = re.compile(r"\.\d+\.(norm[12]|conv[12]|conv_shortcut)\.")


def rename(key: str, rules: Iterable[tuple[str, str]]) -> str:
    """Apply the first matching rule (or none) to one key."""
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return key


def strip_prefix(state: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove the first prefix (e.g. ComfyUI's 'model.diffusion_model.') that every key has."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def diffusers_dit_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers WanTransformer3DModel state dict to official Wan keys."""
    return {rename(k, DIFFUSERS_DIT_RULES): v for k, v in state.items()}


def _decoder_up_block(key: str, num_res_blocks: int) -> str:
    match = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.*)$", key)
    if not match:
        return key
    stage, _, resnet, rest = match.groups()
    per_stage = num_res_blocks + 2  # (R+1) residual blocks and one upsampler
    index = int(stage) * per_stage + (int(resnet) if resnet is not None else num_res_blocks + 1)
    return f"decoder.upsamples.{index}.{rest}"


def diffusers_vae_to_official(state: Mapping[str, torch.Tensor],
                              num_res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKLWan state dict to official Wan VAE keys."""
    out = {}
    for key, value in state.items():
        new = _decoder_up_block(rename(key, DIFFUSERS_VAE_RULES), num_res_blocks)
        if _IN_RESIDUAL_BLOCK.search(new):
            new = rename(new, RESIDUAL_RULES)
        out[new] = value
    return out
