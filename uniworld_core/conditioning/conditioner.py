"""From image + prompt + style to the DiT's positive and negative context.

Works with any encoder that has `encode(image, prompt) -> [1, L, 4096]` and an
`identity` string: the Qwen2.5-VL + adapter encoder (Uniworld-OSP2.0) or the
umT5 encoder (FlashI2V-1.3B). Identical requests are answered from a bounded
cache keyed by content hashes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import torch

from ..media import image_digest
from .styles import OFFICIAL_NEGATIVE_PROMPT, Style, blend, mix, style_negative_prompt, styled_prompt


class PromptEncoder(Protocol):
    identity: str

    def encode(self, image, prompt: str) -> torch.Tensor: ...


@dataclass(frozen=True)
class StyleSpec:
    """A style, its strength (0..1), and optionally a second style mixed in with weights."""

    style: Style | None = None
    strength: float = 1.0
    mix_with: Style | None = None
    mix_weights: tuple[float, float] = (1.0, 1.0)


class Conditioner:
    """Encodes prompts with styles and negatives; caches identical requests."""

    def __init__(self, encoder: PromptEncoder, cache_size: int = 32):
        self.encoder = encoder
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.encoded = 0  # encoder calls actually made (the rest came from the cache)

    def _encode(self, image, prompt: str) -> torch.Tensor:
        key = (self.encoder.identity, getattr(self.encoder, "mode", ""), image_digest(image), prompt)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        features = self.encoder.encode(image, prompt)
        self.encoded += 1
        self._cache[key] = features
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return features

    def positive(self, image, prompt: str, spec: StyleSpec = StyleSpec()) -> torch.Tensor:
        """Conditioning for the prompt with the style (and mix, and strength) applied."""
        if spec.style is None:
            return self._encode(image, prompt)
        styled = self._encode(image, styled_prompt(prompt, spec.style))
        if spec.mix_with is not None:
            second = self._encode(image, styled_prompt(prompt, spec.mix_with))
            styled = mix(styled, second, *spec.mix_weights)
        if spec.strength == 1.0:
            return styled
        return blend(styled, self._encode(image, prompt), spec.strength)

    def negative(self, image, negative_prompt: str | None = None,
                 spec: StyleSpec = StyleSpec()) -> torch.Tensor:
        """The negative conditioning; with a style, the default drops the anti-style terms."""
        if negative_prompt is None:
            negative_prompt = getattr(self.encoder, "default_negative", None)  # a model's own, e.g. the miniature's
        if negative_prompt is None:
            negative_prompt = style_negative_prompt() if spec.style else OFFICIAL_NEGATIVE_PROMPT
        return self._encode(image, negative_prompt)

    def encode(self, image, prompt: str, spec: StyleSpec = StyleSpec(),
               negative_prompt: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) context for the sampler."""
        return self.positive(image, prompt, spec), self.negative(image, negative_prompt, spec)
