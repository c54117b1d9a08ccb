"""umT5-XXL weight files for FlashI2V-1.3B: key layouts and the transformers model they load into.

We do not implement T5 ourselves: official Wan T5 weights (`token_embedding`,
`blocks.N.attn.q`, ...) are renamed to the Hugging Face layout and loaded into
`UMT5EncoderModel`. The official text-encoder contract is kept: each sequence
is cut at its token count and zero-padded back to the full length (512).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..errors import CheckpointError
from .keymaps import rename

UMT5_TEXT_LEN = 512
SPIECE_KEY = "spiece_model"  # ComfyUI's umT5 files carry their SentencePiece model as a uint8 tensor

# official Wan T5 encoder -> Hugging Face UMT5EncoderModel
OFFICIAL_T5_RULES: list[tuple[str, str]] = [
    (r"^token_embedding\.", "shared."),
    (r"^blocks\.(\d+)\.attn\.([qkvo])\.", r"encoder.block.\1.layer.0.SelfAttention.\2."),
    (r"^blocks\.(\d+)\.pos_embedding\.embedding\.",
     r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.block.\1.layer.0.layer_norm."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.block.\1.layer.1.layer_norm."),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_0."),
    (r"^blocks\.(\d+)\.ffn\.fc1\.", r"encoder.block.\1.layer.1.DenseReluDense.wi_1."),
    (r"^blocks\.(\d+)\.ffn\.fc2\.", r"encoder.block.\1.layer.1.DenseReluDense.wo."),
    (r"^norm\.", "encoder.final_layer_norm."),
]


def is_official_t5(state: Mapping[str, torch.Tensor]) -> bool:
    return "token_embedding.weight" in state and "blocks.0.ffn.gate.0.weight" in state


def official_t5_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official Wan T5 encoder keys to UMT5EncoderModel keys."""
    out = {rename(k, OFFICIAL_T5_RULES): v for k, v in state.items()}
    out["encoder.embed_tokens.weight"] = out["shared.weight"]
    return out


def hf_t5_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported umT5 layout (official, HF, ComfyUI) -> UMT5EncoderModel keys."""
    if is_official_t5(state):
        return official_t5_to_hf(state)
    state = {k: v for k, v in state.items() if not k.startswith("decoder.") and k != "lm_head.weight"}
    if "shared.weight" not in state and "encoder.embed_tokens.weight" in state:
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    if "encoder.embed_tokens.weight" not in state and "shared.weight" in state:
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
    return state


def umt5_config_from_state(state: Mapping[str, torch.Tensor], num_heads: int | None = None):
    """A transformers UMT5Config matching a HF-layout state dict's shapes."""
    from transformers import UMT5Config

    if "shared.weight" not in state:
        raise CheckpointError("no token embedding in the text encoder file",
                              "umT5 weights (official Wan T5 or Hugging Face layout)")
    vocab, dim = state["shared.weight"].shape
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.block\.(\d+)\.", k)))
    bias = state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    buckets, heads = bias.shape
    if num_heads is not None and num_heads != heads:
        raise CheckpointError(f"{heads} attention heads in the position bias", f"{num_heads} heads")
    inner = state["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    d_ff = state["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]
    return UMT5Config(vocab_size=int(vocab), d_model=int(dim), d_kv=int(inner) // int(heads),
                      d_ff=int(d_ff), num_layers=layers, num_heads=int(heads),
                      relative_attention_num_buckets=int(buckets), feed_forward_proj="gated-gelu",
                      dropout_rate=0.0, layer_norm_epsilon=1e-6, is_encoder_decoder=False)


def build_umt5(state: Mapping[str, torch.Tensor], device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32):
    """A UMT5EncoderModel holding these weights (any supported layout)."""
    from transformers import UMT5EncoderModel

    hf = hf_t5_state(state)
    config = umt5_config_from_state(hf)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    result = model.load_state_dict(hf, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"the umT5 weights do not fit: missing {result.missing_keys[:4]}, "
                              f"unexpected {result.unexpected_keys[:4]}", "a complete umT5 encoder")
    model.encoder.embed_tokens = model.shared  # tie, as transformers does
    return model.to(device=device, dtype=dtype).eval()


def load_umt5_tokenizer(folder):
    """The umT5 tokenizer from a local folder (Hugging Face files)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"no umT5 tokenizer in '{folder}' ({exc.__class__.__name__})",
                              "a folder with the umT5 tokenizer (spiece.model or tokenizer.json)",
                              "Use the google/umt5-xxl tokenizer folder that ships with Wan2.1.") from exc


class SentencePieceTokenizer:
    """umT5's SentencePiece model used directly, with the call the encoder makes of a Hugging Face tokenizer.

    ComfyUI's umT5 file carries its tokenizer as bytes (a `spiece_model` tensor)
    and no tokenizer folder; this reads it with the `sentencepiece` library.
    Like the umT5 tokenizer of transformers, each text gets `</s>` appended
    (kept when the text is cut to `max_length`) and is padded with `<pad>`.
    """

    def __init__(self, model_proto: bytes):
        import sentencepiece

        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, TypeError) as exc:
            raise CheckpointError(f"a '{SPIECE_KEY}' tensor that is not a SentencePiece model ({exc})",
                                  "umT5's SentencePiece tokenizer", "Use ComfyUI's umt5_xxl file as "
                                  "downloaded, or give the google/umt5-xxl tokenizer folder.") from exc
        self.pad_id = max(self.processor.pad_id(), 0)
        self.eos_id = self.processor.eos_id()

    def __call__(self, texts: list[str], padding: str = "max_length", max_length: int = UMT5_TEXT_LEN,
                 truncation: bool = True, add_special_tokens: bool = True, return_tensors: str = "pt"):
        rows = []
        for text in texts:
            ids = self.processor.encode(text)
            if add_special_tokens:
                ids = ids[: max_length - 1] + [self.eos_id] if truncation else ids + [self.eos_id]
            rows.append(ids[:max_length] if truncation else ids)
        width = max_length if padding == "max_length" else max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row, dtype=torch.long), 1
        return {"input_ids": ids, "attention_mask": mask}


def spiece_tokenizer(tensor: torch.Tensor) -> SentencePieceTokenizer:
    """The tokenizer stored in a file's `spiece_model` tensor."""
    return SentencePieceTokenizer(tensor.to(torch.uint8).contiguous().numpy().tobytes())
