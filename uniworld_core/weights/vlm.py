"""Qwen2.5-VL files: a Hugging Face folder or ComfyUI's single file, its processor, and the adapter file.

`load_vlm` gives (model, processor); `load_adapter` the EncoderAdapter. How
the model is then run on an image and a prompt (the official protocol) is
`conditioning.vlm_encoder`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from PIL import Image

from ..errors import CheckpointError
from ..model.adapter import EncoderAdapter
from .containers import open_weights

# Chat format of Qwen2.5-VL-Instruct (default system turn, image placeholder). The released adapter was
# trained on exactly this rendering, so it is always ours: a tokenizer may carry another template
# (ComfyUI's bundled Qwen2.5 tokenizer carries a text-only one, which fails on the image part).
QWEN25VL_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

QWEN25VL_7B = dict(
    text_config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                     num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                     max_position_embeddings=128000, rms_norm_eps=1e-6, rope_theta=1000000.0,
                     rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}),
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                       out_hidden_size=3584, patch_size=14, spatial_merge_size=2,
                       temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                       tokens_per_second=2),
    image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
    vision_end_token_id=151653)

# Single-file (ComfyUI / older transformers) names -> current Qwen2_5_VLForConditionalGeneration.
SINGLE_FILE_RULES = [
    (re.compile(r"^model\.(embed_tokens|layers|norm)\."), r"model.language_model.\1."),
    (re.compile(r"^visual\."), "model.visual."),
]


def load_adapter(path: str | Path, vlm_hidden: int | None = None,
                 dtype: torch.dtype = torch.float32) -> EncoderAdapter:
    """An adapter from the official `fc1`/`fc2` layout (plain or EMA; .pt or safetensors)."""
    from .detect import identify

    wf = open_weights(path)
    ident = identify(wf)
    if ident.kind != "vlm_adapter":
        raise CheckpointError(f"'{wf.path.name}' is a {ident.kind_name}",
                              "an encoder adapter file (fc1/fc2 weights)")
    in_dim = wf.infos[ident.names["fc1.weight"]].shape[1]
    if vlm_hidden is not None and in_dim != vlm_hidden:
        raise CheckpointError(f"an adapter taking {in_dim}-wide features",
                              f"one taking the VLM's {vlm_hidden}-wide hidden states",
                              "Use the adapter trained for this Qwen2.5-VL model size.")
    return adapter_from(wf, ident, dtype)


def adapter_from(wf, ident, dtype: torch.dtype = torch.float32) -> EncoderAdapter:
    """The EncoderAdapter of an identified adapter file."""
    shape = {name: wf.infos[src].shape for name, src in ident.names.items()}
    in_dim, hidden = shape["fc1.weight"][1], shape["fc1.weight"][0]
    with torch.device("meta"):
        adapter = EncoderAdapter(in_dim, hidden, shape["fc2.weight"][0])
    state = {n: wf.dense(ident.names[n], dtype) for n in ident.names}
    result = adapter.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys:
        raise CheckpointError(f"adapter weights missing {result.missing_keys}", "fc1/fc2 weights and biases")
    return adapter.eval()


def _single_file_config(shapes: dict[str, tuple[int, ...]], has_vision: bool):
    from transformers import Qwen2_5_VLConfig

    lm = "model.language_model."
    vocab, hidden = shapes[lm + "embed_tokens.weight"]
    layers = 1 + max(int(k.split(".")[3]) for k in shapes if k.startswith(lm + "layers."))
    head_dim = 128  # every Qwen2.5 size
    text = dict(QWEN25VL_7B["text_config"], hidden_size=hidden, vocab_size=vocab,
                num_hidden_layers=layers, num_attention_heads=hidden // head_dim,
                num_key_value_heads=shapes[lm + "layers.0.self_attn.k_proj.weight"][0] // head_dim,
                intermediate_size=shapes[lm + "layers.0.mlp.gate_proj.weight"][0])
    vision = dict(QWEN25VL_7B["vision_config"], out_hidden_size=hidden)
    if has_vision:
        vision.update(_vision_widths(shapes))
    ids = {k: v for k, v in QWEN25VL_7B.items() if k.endswith("_id")}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)


def _vision_widths(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Depth and widths of a single file's vision tower, read from its shapes (80-wide heads, as in Qwen2.5-VL)."""
    vis = "model.visual."
    width = shapes[vis + "patch_embed.proj.weight"][0]
    return {"depth": 1 + max(int(k.split(".")[3]) for k in shapes if k.startswith(vis + "blocks.")),
            "hidden_size": width, "num_heads": max(1, width // 80),
            "intermediate_size": shapes[vis + "blocks.0.mlp.gate_proj.weight"][0],
            "out_hidden_size": shapes[vis + "merger.mlp.2.weight"][0]}


def _single_file_names(keys) -> dict[str, str]:
    """transformers name -> name in a single-file Qwen2.5-VL (fp8 scales and the scaled-fp8 marker left out)."""
    names = {}
    for src in keys:
        name = src
        for pattern, repl in SINGLE_FILE_RULES:
            name = pattern.sub(repl, name)
        if not name.endswith((".scale_weight", ".scale_input")) and name != "scaled_fp8":
            names[name] = src
    return names


def is_single_file_vlm(keys) -> bool:
    """Whether tensor names are those of a single-file Qwen2.5-VL (ComfyUI's or transformers' layout).

    Qwen2 (unlike Llama, Gemma, ...) has biases on its k projections; a LoRA or an
    adapter has no token embedding.
    """
    names = _single_file_names(keys)
    lm = "model.language_model."
    return lm + "embed_tokens.weight" in names and lm + "layers.0.self_attn.k_proj.bias" in names


def load_single_file_vlm(path: str | Path, dtype: torch.dtype = torch.bfloat16, config=None):
    """ComfyUI's one-file Qwen2.5-VL text encoder (bf16 or fp8 with scales) into transformers.

    The config is inferred from the shapes with Qwen2.5's 128-wide heads; pass a
    transformers `Qwen2_5_VLConfig` for models with other head sizes.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    try:
        from accelerate import init_empty_weights
    except ImportError as exc:  # a pack installed without its requirements (seen in a real ComfyUI)
        raise CheckpointError(f"'{Path(path).name}' is a one-file Qwen2.5-VL and the 'accelerate' package is "
                              "missing", "the pack's requirements installed",
                              "Run pip install -r requirements.txt (in the pack's folder) with ComfyUI's Python, "
                              "then restart ComfyUI.") from exc
    wf = open_weights(path)
    names = _single_file_names(wf.keys())
    if "model.language_model.embed_tokens.weight" not in names:
        raise CheckpointError(f"'{wf.path.name}' has no Qwen2 token embedding",
                              "a Qwen2.5-VL model file (e.g. qwen_2.5_vl_7b.safetensors)")
    has_vision = any(k.startswith("model.visual.") for k in names)
    if config is None:
        config = _single_file_config({n: wf.infos[s].shape for n, s in names.items()}, has_vision)
    with init_empty_weights():  # parameters on meta; rotary buffers computed for real
        model = Qwen2_5_VLForConditionalGeneration(config)
    state = {n: wf.dense(s, dtype) for n, s in names.items()}
    state.setdefault("lm_head.weight", state["model.language_model.embed_tokens.weight"])
    if not has_vision:
        model.model.visual = None  # official mode never runs the vision tower
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys:
        raise CheckpointError(f"'{wf.path.name}' lacks {result.missing_keys[:4]}",
                              "a complete Qwen2.5-VL language model")
    return model.eval()


def _folder_model_type(folder: Path) -> str:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type", "?")
    except (OSError, json.JSONDecodeError):
        return "no readable config.json"


class VLMProcessor:
    """Qwen2.5-VL inputs from a tokenizer and the (PIL) image processor of transformers.

    Does what Qwen2_5_VLProcessor does for one image, without its video
    processor (which needs torchvision): render the Qwen2.5-VL chat template
    (always ours, whatever template the tokenizer carries), size the image into
    14-px patches, expand `<|image_pad|>` to one token per merged 2x2 patch
    group, and pad on the tokenizer's own padding side.
    """

    image_token = "<|image_pad|>"
    chat_template = QWEN25VL_CHAT_TEMPLATE

    def __init__(self, tokenizer, image_processor):
        self.tokenizer, self.image_processor = tokenizer, image_processor

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def __call__(self, text: str, image: Image.Image, max_length: int) -> dict[str, torch.Tensor]:
        pixels = self.image_processor(images=[image], return_tensors="pt")
        merge = getattr(self.image_processor, "merge_size", 2)
        count = int(pixels["image_grid_thw"][0].prod()) // merge**2
        text = text.replace(self.image_token, self.image_token * count, 1)
        tokens = self.tokenizer([text], padding="max_length", max_length=max_length, return_tensors="pt")
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
                "pixel_values": pixels["pixel_values"], "image_grid_thw": pixels["image_grid_thw"]}


def make_processor(tokenizer_dir: str | Path) -> VLMProcessor:
    """The processor from a folder with tokenizer files (the HF model folder, or ComfyUI's)."""
    import transformers
    from transformers import AutoTokenizer

    # transformers 5 names the PIL (torchvision-free) processor ...Pil; in 4.x it is the plain class
    image_class = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    folder = Path(tokenizer_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"no Qwen2 tokenizer in '{folder}' ({exc.__class__.__name__})",
                              "a folder with tokenizer files (vocab.json/merges.txt or tokenizer.json)",
                              "Point to the Qwen2.5-VL-7B-Instruct folder, or ComfyUI's "
                              "comfy/text_encoders/qwen25_tokenizer.") from exc
    if (folder / "preprocessor_config.json").is_file():
        image_processor = image_class.from_pretrained(folder, local_files_only=True)
    else:
        image_processor = image_class()
    return VLMProcessor(tokenizer, image_processor)


def load_vlm(source: str | Path, dtype: torch.dtype = torch.bfloat16,
             tokenizer_dir: str | Path | None = None, config=None):
    """(model, processor) from a Hugging Face folder or a single-file checkpoint."""
    source = Path(source)
    if source.is_dir():
        model_type = _folder_model_type(source)
        if model_type != "qwen2_5_vl":
            raise CheckpointError(f"the folder '{source.name}' holds a '{model_type}' model",
                                  "a Qwen2.5-VL model folder (config.json model_type 'qwen2_5_vl')",
                                  "Download Qwen2.5-VL-7B-Instruct into models/text_encoders.")
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            source, dtype=dtype, local_files_only=True).eval()
        return model, make_processor(source if tokenizer_dir is None else tokenizer_dir)
    if tokenizer_dir is None:
        raise CheckpointError(f"the single-file VLM '{source.name}' without tokenizer files",
                              "a tokenizer folder as well",
                              "Pass the Qwen2.5-VL-7B-Instruct folder (or, in ComfyUI, its bundled "
                              "comfy/text_encoders/qwen25_tokenizer) as the tokenizer folder.")
    return load_single_file_vlm(source, dtype, config), make_processor(tokenizer_dir)
