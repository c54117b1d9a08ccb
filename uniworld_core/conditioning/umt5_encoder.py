"""umT5 prompt encoding for FlashI2V-1.3B: prompt -> [1, 512, 4096] context.

The official text-encoder contract: each sequence is cut at its token count
and zero-padded back to the full length (512).
"""

from __future__ import annotations

import re

import torch

from ..memory.offload import Placement
from ..weights.umt5 import UMT5_TEXT_LEN


@torch.no_grad()
def encode_tokens(model, ids: torch.Tensor, mask: torch.Tensor,
                  text_len: int | None = None) -> torch.Tensor:
    """Official contract: encoder output cut at each sequence's length, zero-padded to text_len."""
    device = next(model.parameters()).device
    hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    text_len = text_len or ids.shape[1]
    out = hidden.new_zeros(ids.shape[0], text_len, hidden.shape[-1])
    for i, length in enumerate(mask.sum(dim=1).tolist()):
        n = min(int(length), text_len)
        out[i, :n] = hidden[i, :n]
    return out.float()


def clean_prompt(text: str) -> str:
    """The official tokenizer's 'whitespace' cleaning: unescape HTML, fix text, collapse spaces."""
    import html
    import importlib.util

    if importlib.util.find_spec("ftfy") is not None:  # optional, as in the official code: repairs mojibake
        import ftfy

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


class UMT5TextEncoder:
    """Prompt -> [1, 512, 4096] context for FlashI2V-1.3B (the image is not used)."""

    def __init__(self, model, tokenizer, text_len: int = UMT5_TEXT_LEN,
                 compute: torch.device | str = "cpu", offload: bool = False):
        self.tokenizer, self.text_len = tokenizer, text_len
        self.placement = Placement(model, compute, offload)
        self.identity = f"umt5-{model.config.d_model}x{model.config.num_layers}"

    def features(self, image, prompt: str) -> torch.Tensor:
        """What training caches: for umT5 the context itself."""
        return self.encode(image, prompt)

    @torch.no_grad()
    def encode(self, image, prompt: str) -> torch.Tensor:
        tokens = self.tokenizer([clean_prompt(prompt)], padding="max_length", max_length=self.text_len,
                                truncation=True, add_special_tokens=True, return_tensors="pt")
        with self.placement.active() as model:
            return encode_tokens(model, tokens["input_ids"], tokens["attention_mask"], self.text_len).cpu()
