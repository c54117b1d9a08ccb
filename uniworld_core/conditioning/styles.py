"""The style system of Uniworld-OSP2.0: named styles, custom styles, strength and mixes.

Style is part of the condition: the style's prompt text is added to the
user's prompt before encoding. The report names 11 of the 12 training
styles; the twelfth here is pixel art (our choice, documented in the README).
Strength s blends the styled and the unstyled conditioning,
s * c(styled) + (1 - s) * c(plain); a mix of two styles is the weighted
average of their conditionings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError

# The official default negative prompt. Its terms "style, works, paintings,
# images" push away from stylised output, so they are dropped when a style is set.
OFFICIAL_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, "
    "images, static, overall gray, worst quality, low quality, JPEG compression residue, ugly, "
    "incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, "
    "misshapen limbs, fused fingers, still picture, messy background, three legs, many people in "
    "the background, walking backwards")
STYLE_HOSTILE_TERMS = ("style", "works", "paintings", "images")


@dataclass(frozen=True)
class Style:
    name: str
    description: str
    prompt: str  # text added to the user's prompt


BUILTIN_STYLES: tuple[Style, ...] = (
    Style("oil painting", "thick brush strokes, rich saturated pigment, canvas texture",
          "oil painting style, visible thick brushstrokes, rich pigments, canvas texture"),
    Style("hand-drawn", "pencil and ink lines with hand-made imperfection",
          "hand-drawn style, pencil and ink linework, sketchy strokes, paper grain"),
    Style("watercolor", "soft translucent washes that bleed into paper",
          "watercolor painting style, soft translucent washes, bleeding edges, paper texture"),
    Style("anime", "Japanese animation: clean lines, cel shading, expressive colour",
          "anime style, clean line art, cel shading, vibrant colors"),
    Style("cartoon", "bold outlines, flat bright colours, simplified shapes",
          "cartoon style, bold outlines, flat bright colors, simplified shapes"),
    Style("illustration", "polished digital illustration, graphic composition",
          "digital illustration style, polished shading, graphic composition"),
    Style("gothic", "dark medieval architecture, ornate, dramatic and solemn",
          "gothic style, ornate dark architecture, dramatic shadows, solemn mood"),
    Style("dark", "low-key lighting, deep shadows, moody desaturated palette",
          "dark style, low-key lighting, deep shadows, moody desaturated palette"),
    Style("vaporwave", "pastel pink and cyan, retro 80s/90s digital nostalgia",
          "vaporwave style, pastel pink and cyan, retro digital aesthetic, neon grid"),
    Style("cyberpunk", "neon-lit night city, high-tech low-life, magenta and teal",
          "cyberpunk style, neon lights, rainy night city, magenta and teal glow"),
    Style("futuristic sci-fi", "sleek futuristic technology, spacecraft, clean metal and light",
          "futuristic sci-fi style, sleek advanced technology, metallic surfaces, glowing lights"),
    Style("pixel art", "low-resolution pixel grid, limited palette, retro game look",
          "pixel art style, crisp pixel grid, limited color palette, retro video game look"),
)
CUSTOM_STYLES_FILE = "uniworld_styles.json"


def style_negative_prompt(base: str = OFFICIAL_NEGATIVE_PROMPT) -> str:
    """The negative prompt without the terms that fight stylisation."""
    kept = [t.strip() for t in base.split(",") if t.strip().lower() not in STYLE_HOSTILE_TERMS]
    return ", ".join(kept)


def load_custom_styles(path: str | Path) -> list[Style]:
    """Styles from a JSON list of {"name", "description", "prompt"} objects."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"custom style file '{path}' is unreadable ({exc})",
                         'a JSON list like [{"name": ..., "description": ..., "prompt": ...}]') from exc
    if not isinstance(entries, list):
        raise InputError(f"custom style file '{path}' holds a {type(entries).__name__}", "a JSON list")
    styles = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("prompt"):
            raise InputError(f"entry {i} of '{path}'", 'an object with at least "name" and "prompt"')
        styles.append(Style(str(entry["name"]), str(entry.get("description", "")), str(entry["prompt"])))
    return styles


def all_styles(custom_dirs: list[str | Path] = ()) -> dict[str, Style]:
    """Built-in styles plus custom ones from `uniworld_styles.json` in any of `custom_dirs`."""
    styles = {s.name: s for s in BUILTIN_STYLES}
    for folder in custom_dirs:
        path = Path(folder) / CUSTOM_STYLES_FILE
        if path.is_file():
            styles.update({s.name: s for s in load_custom_styles(path)})
    return styles


def styled_prompt(prompt: str, style: Style | None) -> str:
    """The prompt with the style's text appended (unchanged without a style)."""
    if style is None:
        return prompt
    prompt = prompt.strip().rstrip(".")
    return f"{prompt}. {style.prompt}." if prompt else f"{style.prompt}."


def blend(styled: torch.Tensor, plain: torch.Tensor, strength: float) -> torch.Tensor:
    """Style strength: s * styled + (1 - s) * plain."""
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"a style strength of {strength}", "a value between 0 and 1")
    if strength == 1.0:
        return styled
    if strength == 0.0:
        return plain
    return strength * styled + (1.0 - strength) * plain


def mix(first: torch.Tensor, second: torch.Tensor, weight_first: float, weight_second: float) -> torch.Tensor:
    """Style mix: the weighted average of two styled conditionings."""
    total = weight_first + weight_second
    if weight_first < 0 or weight_second < 0 or total <= 0:
        raise InputError(f"style mix weights {weight_first} and {weight_second}",
                         "non-negative weights that are not both zero")
    return (weight_first * first + weight_second * second) / total
