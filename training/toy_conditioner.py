"""The miniature model's condition: a tokenizer trained on the captions and a tiny Qwen2.5-VL.

The language model has the Qwen2.5-VL architecture at a tiny size and stays
frozen at its seeded initialisation (as the real VLM stays frozen); the
adapter learns to read it. Both are saved as an ordinary Hugging Face folder,
so `uniworld_core.weights.vlm.load_vlm` loads it like the real 7B model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from uniworld_core.weights import QWEN25VL_CHAT_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


def train_tokenizer(captions: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer with Qwen's special tokens, trained on the captions."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = captions + ["You are a helpful assistant.", "system user assistant"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    fast.chat_template = QWEN25VL_CHAT_TEMPLATE
    return fast


def tiny_qwen_vl(tokenizer, hidden: int = 128, layers: int = 2, seed: int = 0):
    """A Qwen2.5-VL of tiny size (2 heads of 64; a 1-block vision tower official mode never runs)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    head_dim = hidden // 2
    section = [head_dim // 2 - 2 * (head_dim // 6), head_dim // 6, head_dim // 6]
    config = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, vocab_size=len(tokenizer),
                         max_position_embeddings=2048, rope_scaling={"type": "mrope", "mrope_section": section},
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=hidden),
        **ids)
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def build_toy_vlm(captions: list[str], folder: str | Path, hidden: int = 128, layers: int = 2,
                  seed: int = 0) -> Path:
    """Train the tokenizer, build the frozen tiny VLM, save both as one Hugging Face folder."""
    folder = Path(folder)
    tokenizer = train_tokenizer(captions)
    model = tiny_qwen_vl(tokenizer, hidden, layers, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
