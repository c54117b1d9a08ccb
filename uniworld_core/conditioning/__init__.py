"""Conditioning: image + prompt + style -> DiT context.

`conditioner` (the cached front door, with CFG negatives), `styles` (the 12
built-in styles and style-aware prompts), `vlm_encoder` (Qwen2.5-VL + adapter,
the official protocol), `umt5_encoder` (FlashI2V-1.3B) and `setup` (one
function per encoder, from files to a Conditioner). May import `weights`,
`memory`, `model` and the basics (not `sampling`, not `presets`).
"""

from .conditioner import Conditioner, StyleSpec
from .setup import umt5_conditioner, vlm_conditioner, vlm_encoder
from .styles import BUILTIN_STYLES, CUSTOM_STYLES_FILE, OFFICIAL_NEGATIVE_PROMPT, Style, all_styles, styled_prompt
from .vlm_encoder import ENCODER_SETTINGS_FILE, MODES, VLMEncoder

__all__ = [
    "Conditioner", "StyleSpec", "umt5_conditioner", "vlm_conditioner", "vlm_encoder", "BUILTIN_STYLES",
    "OFFICIAL_NEGATIVE_PROMPT", "Style", "all_styles", "ENCODER_SETTINGS_FILE", "MODES", "VLMEncoder",
    "CUSTOM_STYLES_FILE", "styled_prompt",
]
