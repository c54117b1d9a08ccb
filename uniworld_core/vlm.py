"""Qwen2.5-VL conditioning of Uniworld-OSP2.0, through a small adapter into the DiT.

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
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .errors import CheckpointError, InputError
from .files import open_weights
from .offload import Placement

VLM_HIDDEN = 3584
DIT_TEXT_DIM = 4096
MAX_LENGTH = 1024
OFFICIAL_IMAGE_SIZE = (416, 240)  # the official pipeline encodes a 416x240 resize
MODES = ("official", "full_vision")

# Chat format of Qwen2.5-VL-Instruct (default system turn, image placeholder).
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


class EncoderAdapter(nn.Module):
    """Linear(vlm_hidden -> hidden) -> GELU -> Linear(hidden -> out): VLM features to DiT context."""

    def __init__(self, in_dim: int = VLM_HIDDEN, hidden: int = DIT_TEXT_DIM, out_dim: int = DIT_TEXT_DIM):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(features.to(self.fc1.weight.dtype)))).float()


def load_adapter(path: str | Path, vlm_hidden: int | None = None,
                 dtype: torch.dtype = torch.float32) -> EncoderAdapter:
    """An adapter from the official `fc1`/`fc2` layout (plain or EMA; .pt or safetensors)."""
    from .detect import identify

    wf = open_weights(path)
    ident = identify(wf)
    if ident.kind != "vlm_adapter":
        raise CheckpointError(f"'{wf.path.name}' is a {ident.kind_name}",
                              "an encoder adapter file (fc1/fc2 weights)")
    shape = {name: wf.infos[src].shape for name, src in ident.names.items()}
    in_dim, hidden = shape["fc1.weight"][1], shape["fc1.weight"][0]
    if vlm_hidden is not None and in_dim != vlm_hidden:
        raise CheckpointError(f"an adapter taking {in_dim}-wide features",
                              f"one taking the VLM's {vlm_hidden}-wide hidden states",
                              "Use the adapter trained for this Qwen2.5-VL model size.")
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
        blocks = [int(k.split(".")[3]) for k in shapes if k.startswith("model.visual.blocks.")]
        vision["depth"] = 1 + max(blocks)
    ids = {k: v for k, v in QWEN25VL_7B.items() if k.endswith("_id")}
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)


def load_single_file_vlm(path: str | Path, dtype: torch.dtype = torch.bfloat16, config=None):
    """ComfyUI's one-file Qwen2.5-VL text encoder (bf16 or fp8 with scales) into transformers.

    The config is inferred from the shapes with Qwen2.5's 128-wide heads; pass a
    transformers `Qwen2_5_VLConfig` for models with other head sizes.
    """
    from accelerate import init_empty_weights
    from transformers import Qwen2_5_VLForConditionalGeneration

    wf = open_weights(path)
    names = {}
    for src in wf.keys():
        name = src
        for pattern, repl in SINGLE_FILE_RULES:
            name = pattern.sub(repl, name)
        if not name.endswith((".scale_weight", ".scale_input")) and name != "scaled_fp8":
            names[name] = src
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
    processor (which needs torchvision): render the chat template, size the
    image into 14-px patches, expand `<|image_pad|>` to one token per merged
    2x2 patch group, and pad on the tokenizer's own padding side.
    """

    image_token = "<|image_pad|>"

    def __init__(self, tokenizer, image_processor, chat_template: str | None = None):
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.chat_template = chat_template or tokenizer.chat_template or QWEN25VL_CHAT_TEMPLATE

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
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

    folder = Path(tokenizer_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"no Qwen2 tokenizer in '{folder}' ({exc.__class__.__name__})",
                              "a folder with tokenizer files (vocab.json/merges.txt or tokenizer.json)",
                              "Point to the Qwen2.5-VL-7B-Instruct folder, or ComfyUI's "
                              "comfy/text_encoders/qwen25_tokenizer.") from exc
    if (folder / "preprocessor_config.json").is_file():
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True)
    else:
        image_processor = Qwen2VLImageProcessorPil()
    template = None
    if (folder / "chat_template.json").is_file():
        template = json.loads((folder / "chat_template.json").read_text()).get("chat_template")
    return VLMProcessor(tokenizer, image_processor, template)


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

    def __init__(self, model, processor, adapter: EncoderAdapter, mode: str = "official",
                 compute: torch.device | str = "cpu", offload: bool = False,
                 max_length: int = MAX_LENGTH, image_size: tuple[int, int] = OFFICIAL_IMAGE_SIZE,
                 default_negative: str | None = None):
        if mode not in MODES:
            raise InputError(f"VLM mode {mode!r}", f"one of {MODES}")
        hidden = model.config.text_config.hidden_size
        if adapter.fc1.in_features != hidden:
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
        self.adapter = adapter.to(self.placement.compute)
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
        hidden = self.hidden_states(self.tokenize(image, prompt))
        return self.adapter(hidden.to(self.placement.compute)).cpu()
