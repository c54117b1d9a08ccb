"""Qwen2.5-VL conditioning of Uniworld-OSP2.0: image + prompt -> DiT context, through the adapter.

A frozen Qwen2.5-VL-7B-Instruct reads the conditioning image and the prompt;
its last hidden state (3584 wide) goes through the `EncoderAdapter`
(Linear 3584->4096, GELU, Linear 4096->4096) into the DiT's text width.

Two protocols:
* "official" (default), as the released training code: the chat template
  with one user turn (image, then text) and the generation prompt, padded to
  1024 tokens on the processor's own padding side, and only the *language
  model* is run on the token ids. The image placeholder tokens stay plain
  token embeddings: the vision tower is never used, so the pixels do not
  matter, only the image size (which sets the number of placeholders).
  Adapters trained by the official code only work with this protocol.
* "full_vision": the whole VLM, with real image features merged and
  multimodal positions; for training new adapters.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import CheckpointError, InputError
from ..memory.offload import Placement
from ..model.adapter import EncoderAdapter

MAX_LENGTH = 1024
OFFICIAL_IMAGE_SIZE = (416, 240)  # the official pipeline encodes a 416x240 resize
MODES = ("official", "full_vision")

# Optional, in a VLM folder: {"max_length", "image_size", optionally "default_negative"}.
ENCODER_SETTINGS_FILE = "uniworld_encoder.json"


def encoder_settings(source: str | Path) -> dict:
    """VLMEncoder settings stored beside a VLM (e.g. the miniature model's 128 tokens at 56x56); {} if none.

    The official model needs none: the defaults are its 1024 tokens and 416x240 image.
    """
    path = Path(source) / ENCODER_SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        settings = {"max_length": int(values["max_length"]),
                    "image_size": tuple(int(v) for v in values["image_size"])}
        if "default_negative" in values:
            settings["default_negative"] = str(values["default_negative"])
        return settings
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"an unreadable {path} ({exc})",
                         '{"max_length": N, "image_size": [width, height]}') from exc



def to_pil(image: torch.Tensor | Image.Image) -> Image.Image:
    """[H, W, 3] float in 0..1 (or a PIL image) -> RGB PIL image; refuses empty images."""
    if isinstance(image, Image.Image):
        if min(image.size) < 1:
            raise InputError(f"an image of {image.size[0]}x{image.size[1]} pixels", "a non-empty image")
        return image.convert("RGB")
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise InputError(f"an image tensor of shape {tuple(image.shape)}", "[height, width, 3], not empty")
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array))


class VLMEncoder:
    """Image + prompt -> DiT context [1, max_length, 4096] (float32, on the CPU)."""

    def __init__(self, model, processor, adapter: EncoderAdapter | None, mode: str = "official",
                 compute: torch.device | str = "cpu", offload: bool = False,
                 max_length: int = MAX_LENGTH, image_size: tuple[int, int] = OFFICIAL_IMAGE_SIZE,
                 default_negative: str | None = None):
        if mode not in MODES:
            raise InputError(f"VLM mode {mode!r}", f"one of {MODES}")
        hidden = model.config.text_config.hidden_size
        if adapter is not None and adapter.fc1.in_features != hidden:
            raise CheckpointError(f"an adapter taking {adapter.fc1.in_features}-wide features",
                                  f"one taking this VLM's {hidden}-wide hidden states",
                                  "Use the adapter trained for this Qwen2.5-VL model size.")
        if mode == "full_vision" and getattr(model.model, "visual", None) is None:
            raise CheckpointError("a VLM file without vision-tower weights",
                                  "the full Qwen2.5-VL model for 'full_vision' mode",
                                  "Use 'official' mode, or a file/folder with the visual.* weights.")
        self.processor, self.mode, self.max_length, self.image_size = processor, mode, max_length, image_size
        self.default_negative = default_negative  # None: the official negative prompt
        self.placement = Placement(model, compute, offload)
        # no adapter: features only (what training caches); `encode` needs one
        self.adapter = adapter.to(self.placement.compute) if adapter is not None else None
        self.identity = f"{model.config.text_config.hidden_size}x{model.config.text_config.num_hidden_layers}"

    @property
    def model(self):
        return self.placement.module

    def _chat(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def _inputs(self, image: Image.Image, prompt: str):
        return self.processor(self._chat(prompt), image, self.max_length)

    def tokenize(self, image: torch.Tensor | Image.Image, prompt: str):
        """Processor inputs at exactly `max_length` tokens; an over-long prompt is cut, with a warning."""
        pil = to_pil(image).resize(self.image_size, Image.BICUBIC)
        inputs = self._inputs(pil, prompt)
        overflow = inputs["input_ids"].shape[1] - self.max_length
        if overflow > 0:
            ids = self.processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if overflow >= len(ids):
                raise InputError(f"{self.max_length + overflow} tokens without any prompt room",
                                 f"at most {self.max_length} tokens", "Use a smaller image size.")
            prompt = self.processor.tokenizer.decode(ids[: len(ids) - overflow])
            warnings.warn(f"prompt longer than the {self.max_length}-token budget: its last {overflow} "
                          "tokens were dropped", stacklevel=2)
            inputs = self._inputs(pil, prompt)
        return inputs

    @torch.no_grad()
    def hidden_states(self, inputs) -> torch.Tensor:
        """Last hidden state of every position (padding included) [1, L, hidden]."""
        with self.placement.active() as model:
            device = self.placement.compute
            ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
            if self.mode == "official":
                out = model.model.language_model(input_ids=ids, attention_mask=mask)
            else:
                out = model.model(input_ids=ids, attention_mask=mask,
                                  pixel_values=inputs["pixel_values"].to(device, model.dtype),
                                  image_grid_thw=inputs["image_grid_thw"].to(device))
            return out.last_hidden_state

    @torch.no_grad()
    def features(self, image: torch.Tensor | Image.Image, prompt: str) -> torch.Tensor:
        """The adapter's input: last hidden states [1, max_length, hidden] (what training caches)."""
        return self.hidden_states(self.tokenize(image, prompt)).float().cpu()

    @torch.no_grad()
    def encode(self, image: torch.Tensor | Image.Image, prompt: str) -> torch.Tensor:
        """[1, max_length, 4096] DiT context for this image and prompt."""
        if self.adapter is None:
            raise InputError("a VLM encoder without its adapter", "the Uniworld-OSP2.0 encoder adapter",
                             "Load the adapter file together with the VLM.")
        hidden = self.hidden_states(self.tokenize(image, prompt))
        return self.adapter(hidden.to(self.placement.compute)).cpu()
