"""Conditioning: Qwen2.5-VL + adapter (official and full-vision modes), styles, negatives, cache.

A tiny random Qwen2.5-VL and a tiny BPE tokenizer with the Qwen special
tokens are built here; nothing is downloaded.
"""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import REPO

transformers = pytest.importorskip("transformers")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration  # noqa: E402

from uniworld_core.conditioning.conditioner import Conditioner, StyleSpec  # noqa: E402
from uniworld_core.conditioning.styles import (  # noqa: E402
    BUILTIN_STYLES,
    OFFICIAL_NEGATIVE_PROMPT,
    STYLE_HOSTILE_TERMS,
    styled_prompt,
)
from uniworld_core.conditioning.vlm_encoder import VLMEncoder  # noqa: E402
from uniworld_core.errors import CheckpointError, InputError  # noqa: E402
from uniworld_core.model.adapter import EncoderAdapter  # noqa: E402
from uniworld_core.model.config import DiTConfig  # noqa: E402
from uniworld_core.model.dit import WanDiT  # noqa: E402
from uniworld_core.weights.vlm import QWEN25VL_CHAT_TEMPLATE, load_vlm, make_processor  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
CORPUS = ["a red ball bounces on the grass", "a cat walks slowly across a sunny room",
          "You are a helpful assistant.", "user assistant system", "oil painting watercolor anime",
          "style, brushstrokes, colors, texture, neon, pixel art, dark gothic cyberpunk"] * 20
MAX_LEN = 1024


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen_tokenizer")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   padding_side="left")  # not the default: must be respected
    fast.chat_template = QWEN25VL_CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vlm(tokenizer_dir):
    processor = make_processor(tokenizer_dir)
    tok = processor.tokenizer
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    config = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=4096,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                         pad_token_id=tok.pad_token_id, bos_token_id=None, eos_token_id=None),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]), **ids)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    return model, processor


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(1)
    return EncoderAdapter(64, 48, 40).eval()


def encoder(vlm, adapter, mode="official", **kwargs) -> VLMEncoder:
    return VLMEncoder(vlm[0], vlm[1], adapter, mode=mode, **kwargs)


def image(seed: int, size=(60, 90)) -> torch.Tensor:
    return torch.rand(*size, 3, generator=torch.Generator().manual_seed(seed))


def test_official_mode_shape_padding_and_mask(vlm, adapter):
    enc = encoder(vlm, adapter)
    inputs = enc.tokenize(image(0), "a red ball bounces")
    assert inputs["input_ids"].shape == (1, MAX_LEN)
    assert 0 < inputs["attention_mask"].sum() < MAX_LEN
    assert inputs["attention_mask"][0, 0] == 0, "left padding of this tokenizer must be kept"
    assert enc.encode(image(0), "a red ball bounces").shape == (1, MAX_LEN, 40)


def test_official_mode_matches_a_direct_transformers_computation(vlm, adapter):
    """Written from the protocol's description, independently of VLMEncoder."""
    model, processor = vlm
    tok = processor.tokenizer
    text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "<|vision_start|><|image_pad|><|vision_end|>a cat walks<|im_end|>\n<|im_start|>assistant\n")
    # 416x240 -> 420x252 pixels in 14-px patches -> 30x18 patches -> (30*18)/4 merged image tokens
    text = text.replace("<|image_pad|>", "<|image_pad|>" * (30 * 18 // 4))
    batch = tok([text], padding="max_length", max_length=MAX_LEN, return_tensors="pt")
    text_model_class = transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VLTextModel
    text_model = text_model_class(model.config.text_config)
    text_model.load_state_dict(model.model.language_model.state_dict())
    with torch.no_grad():
        out = text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        expected = adapter(out.last_hidden_state)
    actual = encoder(vlm, adapter).encode(image(3), "a cat walks")
    assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-5)


def test_official_mode_ignores_pixels_full_vision_does_not(vlm, adapter):
    a, b = image(10), image(11)  # same size, different pixels
    official = encoder(vlm, adapter, "official")
    assert torch.equal(official.encode(a, "a cat walks"), official.encode(b, "a cat walks"))
    assert not torch.equal(official.encode(a, "a cat walks"), official.encode(a, "a red ball"))
    full = encoder(vlm, adapter, "full_vision")
    assert not torch.allclose(full.encode(a, "a cat walks"), full.encode(b, "a cat walks"))


def test_adapter_output_feeds_the_dit(vlm, adapter):
    dit = WanDiT(DiTConfig(dim=32, ffn_dim=48, num_heads=2, num_layers=1, freq_dim=16, text_dim=40)).eval()
    enc = encoder(vlm, adapter)
    x = torch.randn(1, 16, 1, 4, 4)
    with torch.no_grad():
        outs = [dit(x, torch.tensor([500.0]), enc.encode(image(0), p), torch.zeros_like(x))
                for p in ("a cat walks", "a red ball")]
    assert all(torch.isfinite(o).all() for o in outs) and not torch.allclose(*outs)


def test_long_prompt_is_truncated_with_a_warning(vlm, adapter):
    enc = encoder(vlm, adapter)
    with pytest.warns(UserWarning, match="tokens were dropped"):
        inputs = enc.tokenize(image(0), "a red ball bounces on the grass " * 400)
    assert inputs["input_ids"].shape == (1, MAX_LEN) and inputs["attention_mask"].all()


def test_empty_image_is_refused(vlm, adapter):
    with pytest.raises(InputError, match="not empty"):
        encoder(vlm, adapter).encode(torch.zeros(0, 10, 3), "a cat")


def test_adapter_width_must_match_the_vlm(vlm):
    with pytest.raises(CheckpointError, match="adapter taking 3584-wide features.*64-wide"):
        VLMEncoder(vlm[0], vlm[1], EncoderAdapter(3584, 8, 8))


def test_folder_that_is_not_qwen25vl(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="holds a 'llama' model.*Qwen2.5-VL"):
        load_vlm(tmp_path)


def test_single_file_vlm_needs_tokenizer_folder(tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer folder"):
        load_vlm(tmp_path / "qwen_2.5_vl_7b.safetensors")


def test_offload_leaves_no_parameter_on_the_compute_device(vlm, adapter):
    """Between encodings every VLM parameter is an empty placeholder: its weights wait in RAM."""
    model = Qwen2_5_VLForConditionalGeneration(vlm[0].config).eval()
    model.load_state_dict(vlm[0].state_dict())
    expected = encoder(vlm, adapter).encode(image(0), "a cat walks")
    enc = VLMEncoder(model, vlm[1], adapter, compute="cpu", offload=True)
    assert all(p.numel() == 0 for p in model.parameters())
    for _ in range(2):
        assert torch.equal(enc.encode(image(0), "a cat walks"), expected)
        assert all(p.numel() == 0 for p in model.parameters())
    assert enc.placement.unit.nbytes == sum(p.numel() * 4 for p in vlm[0].parameters())


class CountingEncoder:
    """A stand-in encoder for the style and cache logic: features are a function of the prompt."""

    identity = "counting"

    def __init__(self):
        self.calls = []

    def encode(self, image, prompt):
        self.calls.append(prompt)
        gen = torch.Generator().manual_seed(hash(prompt) % 2**31)
        return torch.randn(1, 6, 8, generator=gen)


def test_style_strength_and_mix():
    enc = CountingEncoder()
    cond = Conditioner(enc)
    img, prompt = image(0), "a cat walks"
    anime, oil = BUILTIN_STYLES[3], BUILTIN_STYLES[0]
    plain = enc.encode(img, prompt)
    styled = enc.encode(img, styled_prompt(prompt, anime))
    assert torch.equal(cond.positive(img, prompt, StyleSpec(anime, strength=0.0)), plain)
    assert torch.equal(cond.positive(img, prompt, StyleSpec(anime, strength=1.0)), styled)
    half = cond.positive(img, prompt, StyleSpec(anime, strength=0.25))
    assert torch.allclose(half, 0.25 * styled + 0.75 * plain)
    other = enc.encode(img, styled_prompt(prompt, oil))
    mixed = cond.positive(img, prompt, StyleSpec(anime, mix_with=oil, mix_weights=(3.0, 1.0)))
    assert torch.allclose(mixed, 0.75 * styled + 0.25 * other)


def test_negative_prompt_with_and_without_style():
    enc = CountingEncoder()
    cond = Conditioner(enc)
    cond.negative(image(0))
    cond.negative(image(0), spec=StyleSpec(BUILTIN_STYLES[2]))
    assert enc.calls[0] == OFFICIAL_NEGATIVE_PROMPT
    styled_negative = enc.calls[1].lower().split(", ")
    assert not set(STYLE_HOSTILE_TERMS) & set(styled_negative)
    assert "overexposed" in styled_negative


def test_cache_reuses_identical_requests_and_stays_bounded():
    enc = CountingEncoder()
    cond = Conditioner(enc, cache_size=3)
    img = image(0)
    cond.positive(img, "a")
    cond.positive(img.clone(), "a")  # same content, different object
    assert cond.encoded == 1
    cond.positive(image(1), "a")  # other pixels: encoded again
    for p in ("b", "c", "d"):
        cond.positive(img, p)
    assert len(cond._cache) == 3 and cond.encoded == 5
    cond.positive(img, "a")  # evicted: encoded again
    assert cond.encoded == 6


def test_twelve_styles_documented():
    names = [s.name for s in BUILTIN_STYLES]
    assert len(set(names)) == 12 and all(s.description and s.prompt for s in BUILTIN_STYLES)
    readme = (REPO / "README.md").read_text()
    for style in BUILTIN_STYLES:
        assert f"**{style.name}**" in readme, f"style {style.name} missing from the README"


def _comfy_single_file(model, path, fp8=False, vision=True):
    """Save like ComfyUI's qwen_2.5_vl_7b*.safetensors: older HF names, optional fp8 with scales."""
    from safetensors.torch import save_file

    state = {}
    for name, tensor in model.state_dict().items():
        name = name.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
        if name.startswith("visual.") and not vision:
            continue
        if fp8 and tensor.ndim == 2 and name.endswith("proj.weight"):
            scale = tensor.abs().max() / 448
            state[name.replace(".weight", ".scale_weight")] = scale.reshape(())
            tensor = (tensor / scale).to(torch.float8_e4m3fn)
        state[name] = tensor.contiguous()
    save_file(state, str(path))


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16-like", "fp8-scaled"])
def test_single_file_vlm_loads_into_transformers(vlm, adapter, tokenizer_dir, tmp_path, fp8):
    path = tmp_path / "qwen_2.5_vl_7b.safetensors"
    _comfy_single_file(vlm[0], path, fp8=fp8)
    model, processor = load_vlm(path, dtype=torch.float32, tokenizer_dir=tokenizer_dir, config=vlm[0].config)
    expected = encoder(vlm, adapter).encode(image(0), "a cat walks")
    actual = VLMEncoder(model, processor, adapter).encode(image(0), "a cat walks")
    if fp8:  # the fp8 rounding is the only difference
        assert torch.allclose(actual, expected, atol=0.05) and not torch.equal(actual, expected)
    else:
        assert torch.allclose(actual, expected, atol=1e-6, rtol=1e-6)


def test_single_file_without_vision_runs_official_mode_only(vlm, adapter, tokenizer_dir, tmp_path):
    path = tmp_path / "qwen_text_only.safetensors"
    _comfy_single_file(vlm[0], path, vision=False)
    model, processor = load_vlm(path, dtype=torch.float32, tokenizer_dir=tokenizer_dir, config=vlm[0].config)
    expected = encoder(vlm, adapter).encode(image(0), "a cat walks")
    assert torch.allclose(VLMEncoder(model, processor, adapter).encode(image(0), "a cat walks"), expected,
                          atol=1e-6, rtol=1e-6)
    with pytest.raises(CheckpointError, match="without vision-tower weights"):
        VLMEncoder(model, processor, adapter, mode="full_vision")


def test_single_file_vlm_without_accelerate_says_to_install_the_requirements(vlm, tokenizer_dir, tmp_path,
                                                                             monkeypatch):
    """A pack installed without its requirements met a bare ModuleNotFoundError in a real ComfyUI."""
    path = tmp_path / "qwen_2.5_vl_7b.safetensors"
    _comfy_single_file(vlm[0], path)
    monkeypatch.setitem(sys.modules, "accelerate", None)  # what Python does for a missing package
    with pytest.raises(CheckpointError, match="'accelerate' package is missing.*pip install -r requirements.txt"):
        load_vlm(path, dtype=torch.float32, tokenizer_dir=tokenizer_dir, config=vlm[0].config)


def test_single_file_vision_tower_widths_are_read_from_the_file(tmp_path, tokenizer_dir):
    """No config given: the vision tower's depth and widths come from the file (80-wide heads, as Qwen2.5-VL's)."""
    from comfyui_standins import tiny_qwen25vl

    source = tiny_qwen25vl(vocab_size=len(make_processor(tokenizer_dir).tokenizer))  # 1 block, 160 wide, 2 heads
    path = tmp_path / "qwen_2.5_vl_small_vision.safetensors"
    _comfy_single_file(source, path, fp8=True)
    model, processor = load_vlm(path, dtype=torch.float32, tokenizer_dir=tokenizer_dir)
    vision = model.config.vision_config
    assert (vision.depth, vision.hidden_size, vision.num_heads, vision.intermediate_size,
            vision.out_hidden_size) == (1, 160, 2, 48, 128)
    head = EncoderAdapter(128, 48, 40).eval()
    expected = VLMEncoder(source, processor, head).encode(image(0), "a cat walks")
    assert torch.allclose(VLMEncoder(model, processor, head).encode(image(0), "a cat walks"), expected, atol=0.05)


def test_the_qwen25vl_chat_template_is_ours_whatever_the_tokenizer_carries(tmp_path):
    """ComfyUI's bundled Qwen2.5 tokenizer carries a text-only chat template, which fails on an image part."""
    from comfyui_standins import write_bundled_qwen_tokenizer

    processor = make_processor(write_bundled_qwen_tokenizer(tmp_path / "qwen25_tokenizer"))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a cat walks"}]}]
    assert processor.apply_chat_template(messages) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>a cat walks<|im_end|>\n<|im_start|>assistant\n")


def test_adapter_files(adapter, tmp_path):
    from safetensors.torch import save_file

    from uniworld_core.weights.vlm import load_adapter

    torch.save({"ema": adapter.state_dict(), "step": 5}, tmp_path / "adapter_ema.pt")
    save_file(adapter.state_dict(), str(tmp_path / "adapter.safetensors"))
    x = torch.randn(1, 3, 64)
    for name in ("adapter_ema.pt", "adapter.safetensors"):
        loaded = load_adapter(tmp_path / name, vlm_hidden=64)
        assert torch.equal(loaded(x), adapter(x))
    with pytest.raises(CheckpointError, match="adapter taking 64-wide features.*3584-wide"):
        load_adapter(tmp_path / "adapter.safetensors", vlm_hidden=3584)


def test_umt5_prompt_path_with_a_tokenizer_folder(tmp_path):
    from tokenizers import normalizers
    from transformers import UMT5Config, UMT5EncoderModel

    from uniworld_core.conditioning.umt5_encoder import UMT5TextEncoder, encode_tokens
    from uniworld_core.weights.umt5 import load_umt5_tokenizer

    words = sorted({w for line in CORPUS for w in line.replace(",", " ").split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tmp_path / "umt5")
    torch.manual_seed(0)
    model = UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=16, d_kv=4, d_ff=24, num_layers=2,
                                        num_heads=4, relative_attention_num_buckets=8,
                                        feed_forward_proj="gated-gelu", dropout_rate=0.0)).eval()
    tokenizer = load_umt5_tokenizer(tmp_path / "umt5")
    context = UMT5TextEncoder(model, tokenizer).encode(None, "  A red   ball &amp; a cat ")
    assert context.shape == (1, 512, 16)
    ids = tokenizer(["a red ball & a cat"], padding="max_length", max_length=512, return_tensors="pt")
    count = int(ids["attention_mask"].sum())
    assert count == 7  # 6 words and </s>: cleaning unescaped '&amp;' and collapsed the spaces
    expected = encode_tokens(model, ids["input_ids"], ids["attention_mask"])
    assert torch.allclose(context, expected) and not context[0, count:].any()


def test_custom_styles_file(tmp_path):
    from uniworld_core.conditioning.styles import CUSTOM_STYLES_FILE, all_styles

    (tmp_path / CUSTOM_STYLES_FILE).write_text(
        '[{"name": "stained glass", "description": "leaded glass", "prompt": "stained glass style"}]')
    styles = all_styles([tmp_path])
    assert len(styles) == 13 and styles["stained glass"].prompt == "stained glass style"
    (tmp_path / CUSTOM_STYLES_FILE).write_text('[{"description": "no name"}]')
    with pytest.raises(InputError, match='at least "name" and "prompt"'):
        all_styles([tmp_path])
