"""ComfyUI as the pack meets it, for tests without ComfyUI: stand-ins that behave as ComfyUI 0.3.64 does.

Written from ComfyUI's behaviour, not its code:
- `folder_paths`: ComfyUI's model folders, each with the extensions registered for it
  (`supported_pt_extensions` for the model folders: `.gguf` and `.json` are not among them).
  `get_filename_list` lists a folder recursively, as relative names, and keeps only files
  with a registered extension (an empty set keeps all); packs register keys of their own
  by adding to `folder_names_and_paths`.
- the `comfy` package: a namespace package whose folder holds `text_encoders/qwen25_tokenizer`,
  ComfyUI's bundled Qwen2.5 tokenizer: slow-format BPE files (vocab.json, merges.txt,
  tokenizer_config.json with its special tokens after the vocabulary) and a text-only chat
  template that adds each message's content as a string, so an image + text content list
  fails with "can only concatenate str (not "list") to str", as ComfyUI's does.
- prompt validation (`validation_errors`): per input of INPUT_TYPES(), as execution.py does:
  a missing required input, a link of the wrong type, a constant converted to its type, then
  min/max and, for a list type, "value not in list"; inputs named by the node's
  VALIDATE_INPUTS skip the range and list checks and VALIDATE_INPUTS decides instead.
- `write_model_files`: tiny models saved under the shipped workflows' file names in the
  layouts users download: ComfyUI's single-file Qwen2.5-VL (fp8 e4m3fn with per-tensor
  `scale_weight`, the `scaled_fp8` marker, a vision tower), a Hugging Face Qwen2.5-VL
  folder, the official-layout FlashI2V DiTs (bf16 safetensors and a GGUF made by our
  quantize tool), the adapter, the VAE as ComfyUI's safetensors and the official .pth,
  and ComfyUI's umT5 file (Hugging Face names, fp8 scaled, its SentencePiece model as a
  `spiece_model` uint8 tensor).
"""

from __future__ import annotations

import importlib.machinery
import io
import json
import os
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
# ComfyUI's folder keys -> their sub-folders of models/ (and extensions, when not the model ones)
COMFY_FOLDERS = {
    "checkpoints": (["checkpoints"], None), "configs": (["configs"], [".yaml"]), "loras": (["loras"], None),
    "vae": (["vae"], None), "text_encoders": (["text_encoders", "clip"], None),
    "diffusion_models": (["unet", "diffusion_models"], None), "clip_vision": (["clip_vision"], None),
    "style_models": (["style_models"], None), "embeddings": (["embeddings"], None),
    "diffusers": (["diffusers"], ["folder"]), "vae_approx": (["vae_approx"], None),
    "controlnet": (["controlnet", "t2i_adapter"], None), "gligen": (["gligen"], None),
    "upscale_models": (["upscale_models"], None), "hypernetworks": (["hypernetworks"], None),
    "photomaker": (["photomaker"], None), "classifiers": (["classifiers"], {""}),
    "model_patches": (["model_patches"], None), "audio_encoders": (["audio_encoders"], None),
}
LEGACY_NAMES = {"unet": "diffusion_models", "clip": "text_encoders"}
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# Text-only ChatML, as the bundled tokenizer's template: a message's content is added as a string.
TEXT_ONLY_TEMPLATE = (
    "{%- if messages[0].role != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
CORPUS = ["a red ball bounces on the grass", "a cat walks slowly across a sunny room",
          "You are a helpful assistant.", "user assistant system", "oil painting watercolor anime",
          "the scene comes alive: the subject moves naturally, gentle camera push-in",
          "style, brushstrokes, colors, texture, neon, pixel art, dark gothic cyberpunk"] * 20


def _walk(root: str) -> list[str]:
    found = []
    for folder, subdirs, files in os.walk(root, followlinks=True):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        found += [os.path.relpath(os.path.join(folder, f), root) for f in files]
    return found


def folder_paths_module(base: Path) -> types.ModuleType:
    """A `folder_paths` for a ComfyUI whose base folder is `base` (models/, input/, output/)."""
    fp = types.ModuleType("folder_paths")
    fp.supported_pt_extensions = set(SUPPORTED_PT_EXTENSIONS)
    fp.base_path, fp.models_dir = str(base), str(base / "models")
    fp.folder_names_and_paths = {
        name: ([str(base / "models" / sub) for sub in subs], set(exts) if exts is not None
               else fp.supported_pt_extensions) for name, (subs, exts) in COMFY_FOLDERS.items()}
    fp.folder_names_and_paths["custom_nodes"] = ([str(base / "custom_nodes")], set())

    def map_legacy(name):
        return LEGACY_NAMES.get(name, name)

    def get_folder_paths(name):
        return list(fp.folder_names_and_paths[map_legacy(name)][0])

    def get_filename_list(name):
        paths, extensions = fp.folder_names_and_paths[map_legacy(name)]
        names = set()
        for path in paths:
            if os.path.isdir(path):
                names.update(f for f in _walk(path)
                             if not extensions or os.path.splitext(f)[-1].lower() in extensions)
        return sorted(names)

    def get_full_path(name, filename):
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for path in get_folder_paths(name):
            if os.path.isfile(os.path.join(path, filename)):
                return os.path.join(path, filename)
        return None

    def add_model_folder_path(name, path, is_default=False):
        name = map_legacy(name)
        if name not in fp.folder_names_and_paths:
            fp.folder_names_and_paths[name] = ([path], set())
        elif path not in fp.folder_names_and_paths[name][0]:
            fp.folder_names_and_paths[name][0].insert(0, path) if is_default else (
                fp.folder_names_and_paths[name][0].append(path))

    for fn in (map_legacy, get_folder_paths, get_filename_list, get_full_path, add_model_folder_path):
        setattr(fp, fn.__name__, fn)
    fp.get_input_directory = lambda: str(base / "input")
    fp.get_output_directory = lambda: str(base / "output")
    return fp


class ComfyStandIn:
    """folder_paths, comfy (+ its bundled tokenizer), comfy.utils and comfy.model_management for tests.

    Records progress updates; `interrupt_at` makes the interrupt check raise after that many checks.
    """

    def __init__(self, base: Path):
        self.base, self.progress, self.interrupt_at, self.step = base, [], None, 0
        self.qwen_tokenizer = base / "comfy" / "text_encoders" / "qwen25_tokenizer"
        for kind in ("diffusion_models", "vae", "text_encoders", "loras"):
            (base / "models" / kind).mkdir(parents=True, exist_ok=True)
        if not self.qwen_tokenizer.is_dir():
            write_bundled_qwen_tokenizer(self.qwen_tokenizer)

    def modules(self) -> dict[str, types.ModuleType]:
        comfy = types.ModuleType("comfy")  # a namespace package, as in ComfyUI
        comfy.__path__ = [str(self.base / "comfy")]
        comfy.__spec__ = importlib.machinery.ModuleSpec("comfy", None, is_package=True)
        comfy.__spec__.submodule_search_locations = comfy.__path__
        utils = types.ModuleType("comfy.utils")
        stand_in = self

        class ProgressBar:
            def __init__(self, total):
                self.total = total

            def update_absolute(self, value, total=None, preview=None):
                stand_in.progress.append((value, total, preview))

        def throw_if_interrupted():
            stand_in.step += 1
            if stand_in.interrupt_at is not None and stand_in.step > stand_in.interrupt_at:
                raise InterruptedError("Processing interrupted")

        utils.ProgressBar = ProgressBar
        mm = types.ModuleType("comfy.model_management")
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unload_all_models = mm.soft_empty_cache = lambda: None
        mm.throw_exception_if_processing_interrupted = throw_if_interrupted
        return {"folder_paths": folder_paths_module(self.base), "comfy": comfy, "comfy.utils": utils,
                "comfy.model_management": mm}

    def install(self, monkeypatch) -> None:
        for name, module in self.modules().items():
            monkeypatch.setitem(sys.modules, name, module)


def _train_bpe(vocab_size: int, special: list[str] = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special),
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def write_bundled_qwen_tokenizer(folder: Path) -> Path:
    """A tokenizer folder laid out and behaving like ComfyUI's comfy/text_encoders/qwen25_tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = _train_bpe(400)
    tok.model.save(str(folder))  # vocab.json + merges.txt; the special tokens come after the vocabulary
    size = tok.get_vocab_size()
    added = {str(size + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True} for i, t in enumerate(QWEN_SPECIAL)}
    config = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
              "additional_special_tokens": QWEN_SPECIAL[1:], "bos_token": None,
              "chat_template": TEXT_ONLY_TEMPLATE, "clean_up_tokenization_spaces": False,
              "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 131072,
              "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
              "unk_token": None}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def _converted(value, kind):
    return {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(kind, lambda v: v)(value)


def _constant_errors(name, kind, options, value, custom: set[str]) -> list[str]:
    try:
        value = _converted(value, kind) if isinstance(kind, str) else value
    except (TypeError, ValueError):
        return [f"invalid_input_type: {name}, {value}"]
    if name in custom:
        return []
    if "min" in options and value < options["min"]:
        return [f"value_smaller_than_min: {name}"]
    if "max" in options and value > options["max"]:
        return [f"value_bigger_than_max: {name}"]
    if isinstance(kind, list) and value not in kind:
        return [f"value_not_in_list: {name}: '{value}' not in "
                f"{f'(list of length {len(kind)})' if len(kind) > 20 else kind}"]
    return []


def validation_errors(prompt: dict[str, dict], classes: dict[str, type]) -> list[str]:
    """What ComfyUI's prompt validation reports for an API prompt ("node id: error type: details")."""
    errors = []
    for node_id, entry in prompt.items():
        cls, inputs = classes[entry["class_type"]], entry["inputs"]
        check = getattr(cls, "VALIDATE_INPUTS", None)
        custom = set(check.__code__.co_varnames[1:check.__code__.co_argcount]) if check else set()
        declared = cls.INPUT_TYPES()
        found = []
        for section in ("required", "optional"):
            for name, (kind, *rest) in declared.get(section, {}).items():
                options = rest[0] if rest else {}
                if name not in inputs:
                    found += [f"required_input_missing: {name}"] if section == "required" else []
                elif isinstance(inputs[name], list):
                    source = prompt[inputs[name][0]]["class_type"]
                    produced = classes[source].RETURN_TYPES[inputs[name][1]]
                    expected = "COMBO" if isinstance(kind, list) else kind
                    if "*" not in (produced, expected) and produced != expected:
                        found.append(f"return_type_mismatch: {name}, received_type({produced})")
                else:
                    found += _constant_errors(name, kind, options, inputs[name], custom)
        if custom:
            verdict = check(**{k: v for k, v in inputs.items() if k in custom})
            if verdict is not True:
                found.append(f"custom_validation_failed: {verdict}")
        errors += [f"{node_id} ({entry['class_type']}): {e}" for e in found]
    return errors


# ---- model files in the layouts users have, at tiny sizes

def _fp8_scaled(state: dict[str, torch.Tensor], linear) -> dict[str, torch.Tensor]:
    """ComfyUI's scaled-fp8 layout: matrices in fp8 e4m3fn with a per-tensor scale_weight, a scaled_fp8 marker."""
    out = {}
    for name, tensor in state.items():
        if linear(name, tensor):
            scale = tensor.float().abs().max().clamp_min(1e-8) / 448.0
            out[name] = (tensor.float() / scale).to(torch.float8_e4m3fn)
            out[name[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[name] = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
    out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return out


def tiny_qwen25vl(vocab_size: int, seed: int = 0):
    """A Qwen2.5-VL of tiny size with Qwen2.5's 128-wide text heads and 80-wide vision heads."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(text_config=dict(
        hidden_size=128, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
        vocab_size=vocab_size, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
        bos_token_id=None, eos_token_id=None),
        vision_config=dict(depth=1, hidden_size=160, intermediate_size=48, num_heads=2, out_hidden_size=128))
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def write_qwen_single_file(path: Path, vocab_size: int, vision: bool = True) -> Path:
    """ComfyUI's qwen_2.5_vl_7b_fp8_scaled.safetensors layout: model.* and visual.* names, fp8 scaled.

    vision=False: the same without the vision tower (a text-only export).
    """
    state = {k.replace("model.language_model.", "model.").replace("model.visual.", "visual."): v
             for k, v in tiny_qwen25vl(vocab_size).state_dict().items()
             if k != "lm_head.weight" and (vision or not k.startswith("model.visual."))}
    save_file(_fp8_scaled(state, lambda n, t: t.ndim == 2 and n.endswith(".weight") and "embed" not in n),
              str(path))
    return path


def write_qwen_folder(folder: Path, tokenizer) -> Path:
    """A Hugging Face Qwen2.5-VL-7B-Instruct folder (config, weights, tokenizer)."""
    tiny_qwen25vl(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentencepiece_model(vocab_size: int = 64) -> bytes:
    """A unigram SentencePiece model with umT5's special ids (pad 0, eos 1, unk 2)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model,
                                             vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                             model_type="unigram", minloglevel=2)
    return model.getvalue()


def write_umt5_comfy_file(path: Path, d_model: int = 16, vocab_size: int = 64) -> Path:
    """ComfyUI's umt5_xxl_fp8_e4m3fn_scaled.safetensors layout, with its tokenizer as a spiece_model tensor."""
    import numpy as np
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(1)
    t5 = UMT5EncoderModel(UMT5Config(vocab_size=vocab_size, d_model=d_model, d_kv=4, d_ff=24, num_layers=1,
                                     num_heads=4, relative_attention_num_buckets=8, feed_forward_proj="gated-gelu"))
    state = {k: v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    tensors = _fp8_scaled(state, lambda n, t: t.ndim == 2 and ".block." in n and n.endswith(".weight"))
    proto = sentencepiece_model(vocab_size)
    tensors["spiece_model"] = torch.from_numpy(np.frombuffer(proto, dtype=np.uint8).copy())
    save_file(tensors, str(path))
    return path


def write_model_files(models: Path, vlm_vocab: int, hf_tokenizer=None) -> dict[str, Path]:
    """The shipped workflows' files (and an official .pth VAE, a HF Qwen folder with `hf_tokenizer`)."""
    from uniworld_core.model import DiTConfig, EncoderAdapter, VAEConfig, WanDiT, WanVAE
    from uniworld_core.weights import quantize_file

    dm, te, vae_dir = models / "diffusion_models", models / "text_encoders", models / "vae"
    for folder in (dm, te, vae_dir):
        folder.mkdir(parents=True, exist_ok=True)
    written = {"qwen": write_qwen_single_file(te / "qwen_2.5_vl_7b_fp8_scaled.safetensors", vlm_vocab),
               "umt5": write_umt5_comfy_file(te / "umt5_xxl_fp8_e4m3fn_scaled.safetensors")}
    torch.manual_seed(0)
    save_file(EncoderAdapter(128, 64, 48).state_dict(), str(dm / "uniworld_osp2_adapter.safetensors"))
    written["adapter"] = dm / "uniworld_osp2_adapter.safetensors"
    # text width 48 (the adapter's output) for Uniworld-OSP2.0, 16 (umT5's width) for FlashI2V-1.3B
    for key, name, text_dim in (("dit", "uniworld_osp2_dit_14B_bf16.safetensors", 48),
                                ("flashi2v", "flashi2v_1.3B.safetensors", 16)):
        dit = WanDiT(DiTConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=1, freq_dim=32, text_dim=text_dim))
        save_file({k: v.to(torch.bfloat16) for k, v in dit.state_dict().items()}, str(dm / name))
        written[key] = dm / name
    # Q4_0: this tiny model's widths are not multiples of the 256-wide K-quant blocks
    written["gguf"] = quantize_file(written["dit"], dm / "uniworld_osp2_dit_14B_Q4_K.gguf", "Q4_0")
    vae_state = WanVAE(VAEConfig(base_dim=8)).state_dict()
    save_file(vae_state, str(vae_dir / "wan_2.1_vae.safetensors"))
    torch.save(vae_state, vae_dir / "Wan2.1_VAE.pth")
    written.update(vae=vae_dir / "wan_2.1_vae.safetensors", vae_pth=vae_dir / "Wan2.1_VAE.pth")
    if hf_tokenizer is not None:
        written["qwen_folder"] = write_qwen_folder(te / "Qwen2.5-VL-7B-Instruct", hf_tokenizer)
    return written
