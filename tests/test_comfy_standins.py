"""The pack as ComfyUI 0.3.64 sees it: what the loaders list, what validation accepts, what runs.

ComfyUI is played by the stand-ins of tests/comfyui_standins.py, which behave as
ComfyUI does where the pack meets it: folder listings keep only registered
extensions, the bundled Qwen2.5 tokenizer has a text-only chat template, and
prompt validation rejects a combo value that is not in the node's list. The
model files are tiny models in the layouts users download.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from comfyui_standins import (
    ComfyStandIn,
    folder_paths_module,
    sentencepiece_model,
    validation_errors,
    write_bundled_qwen_tokenizer,
    write_model_files,
    write_qwen_single_file,
)
from conftest import REPO
from PIL import Image
from safetensors.torch import save_file

pytest.importorskip("transformers")

API_WORKFLOWS = sorted((REPO / "workflows").glob("*.api.json"))
PACK_NAME = "ComfyUI-UniWorld-OSP2"
TEXT_ONLY_QWEN = "qwen_2.5_vl_7b_text_only.safetensors"  # a single file exported without the vision tower


def _sharded_dit(folder: Path) -> None:
    """A DiT in two shards with its index, as diffusers and the Wan releases ship big checkpoints."""
    from uniworld_core.model import DiTConfig, WanDiT

    folder.mkdir(parents=True)
    state = WanDiT(DiTConfig(dim=64, ffn_dim=32, num_heads=1, num_layers=1, freq_dim=16, text_dim=48)).state_dict()
    names = sorted(state)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": names[: len(names) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(folder / shard))
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory) -> Path:
    """A ComfyUI base folder: its bundled tokenizer, the workflows' files and others a user may have."""
    from transformers import AutoTokenizer

    base = tmp_path_factory.mktemp("comfyui")
    stand_in = ComfyStandIn(base)
    tokenizer = AutoTokenizer.from_pretrained(stand_in.qwen_tokenizer)
    models = base / "models"
    write_model_files(models, len(tokenizer), hf_tokenizer=tokenizer)
    write_qwen_single_file(models / "text_encoders" / TEXT_ONLY_QWEN, len(tokenizer), vision=False)
    _sharded_dit(models / "diffusion_models" / "sharded_dit")
    t5_tokenizer = models / "text_encoders" / "umt5-xxl-tokenizer"  # the google/umt5-xxl tokenizer files
    t5_tokenizer.mkdir()
    (t5_tokenizer / "spiece.model").write_bytes(sentencepiece_model())
    (t5_tokenizer / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    save_file({"text_model.embeddings.token_embedding.weight": torch.zeros(8, 4)},
              str(models / "text_encoders" / "clip_l.safetensors"))  # another model family's text encoder
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, 8),
               "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(8, 2)},
              str(models / "loras" / "motion_lora.safetensors"))
    (models / "diffusion_models" / "truncated_download.safetensors").write_bytes(b"\x10\x00\x00")
    (base / "input").mkdir()
    Image.new("RGB", (80, 60), (120, 160, 200)).save(base / "input" / "input.png")
    Image.new("RGB", (64, 64), (20, 20, 60)).save(base / "input" / "toy_photo_0.png")
    return base


@pytest.fixture
def pack(comfyui, monkeypatch):
    """The pack imported as ComfyUI imports a custom-node folder, with the stand-ins in place."""
    monkeypatch.delenv("UNIWORLD_MINIATURE_DIR", raising=False)  # the shipped miniature model is installed
    ComfyStandIn(comfyui).install(monkeypatch)
    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    standins = importlib.import_module(f"{PACK_NAME}.nodes.headless.standins")
    monkeypatch.setattr(standins.FOLDERS, "input", comfyui / "input")
    monkeypatch.setattr(standins.FOLDERS, "output", comfyui / "output")
    yield module
    for key in [k for k in sys.modules if k.startswith(PACK_NAME)]:
        del sys.modules[key]


def _choices(pack, node: str, name: str) -> list:
    spec = pack.NODE_CLASS_MAPPINGS[node].INPUT_TYPES()
    return {**spec["required"], **spec.get("optional", {})}[name][0]


# ---- the stand-ins behave as ComfyUI does

def test_folder_paths_stand_in_lists_only_registered_extensions(tmp_path):
    base = tmp_path / "comfyui"
    for name in ("a.safetensors", "b.gguf", "c.json", "sub/d.sft", "sub/e.txt"):
        (base / "models" / "diffusion_models" / name).parent.mkdir(parents=True, exist_ok=True)
        (base / "models" / "diffusion_models" / name).write_bytes(b"")
    folder_paths = folder_paths_module(base)
    assert folder_paths.get_filename_list("diffusion_models") == ["a.safetensors", os.path.join("sub", "d.sft")]
    assert folder_paths.get_filename_list("unet") == folder_paths.get_filename_list("diffusion_models")
    folder_paths.folder_names_and_paths["gguf_dits"] = (folder_paths.get_folder_paths("unet"), {".gguf"})
    assert folder_paths.get_filename_list("gguf_dits") == ["b.gguf"]


def _bundled_tokenizers(tmp_path) -> list[Path]:
    folders = [write_bundled_qwen_tokenizer(tmp_path / "qwen25_tokenizer")]
    comfyui = os.environ.get("UNIWORLD_COMFYUI_DIR")
    if comfyui:  # the real one, when a ComfyUI checkout is given
        folders.append(Path(comfyui) / "comfy" / "text_encoders" / "qwen25_tokenizer")
    return folders


def test_bundled_tokenizer_stand_in_has_comfyuis_text_only_chat_template(tmp_path):
    from transformers import AutoTokenizer

    vl_message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a cat"}]}]
    for folder in _bundled_tokenizers(tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert len(tokenizer("<|image_pad|>")["input_ids"]) == 1, "the image token is one special token"
        with pytest.raises(TypeError, match="can only concatenate str"):
            tokenizer.apply_chat_template(vl_message, tokenize=False, add_generation_prompt=True)


def test_validation_stand_in_rejects_a_value_not_in_the_list(pack):
    prompt = {"1": {"class_type": "UniWorldStyleSelect",
                    "inputs": {"style": "sepia", "strength": 1.0, "custom_text": "", "mix_style": "none",
                               "mix_weight": 0.5}}}
    errors = validation_errors(prompt, {"UniWorldStyleSelect": pack.NODE_CLASS_MAPPINGS["UniWorldStyleSelect"]})
    assert len(errors) == 1 and "value_not_in_list: style: 'sepia'" in errors[0]


# ---- bug 2: .gguf and sharded checkpoints are listed where they belong; every shipped workflow validates

@pytest.mark.parametrize("path", API_WORKFLOWS, ids=lambda p: p.name.removesuffix(".api.json"))
def test_shipped_workflow_passes_comfyuis_validation(pack, path):
    runner = importlib.import_module(f"{PACK_NAME}.nodes.headless.runner")
    assert validation_errors(json.loads(path.read_text()), runner.node_classes()) == []


def test_dit_loader_lists_gguf_and_sharded_checkpoints(pack):
    choices = _choices(pack, "UniWorldDiTLoader", "dit_name")
    index = os.path.join("sharded_dit", "diffusion_pytorch_model.safetensors.index.json")
    assert "uniworld_osp2_dit_14B_Q4_K.gguf" in choices and index in choices
    assert not any("-of-00002" in c for c in choices), "a shard is part of its index, not a model"


def test_the_pack_lists_through_keys_of_its_own_and_leaves_comfyuis_alone(pack, comfyui, tmp_path):
    import shutil

    import folder_paths

    registry = folder_paths.folder_names_and_paths
    assert registry["diffusion_models"][1] == folder_paths.supported_pt_extensions  # ComfyUI's lists unchanged
    assert ".gguf" in registry["uniworld_diffusion_models"][1]
    # a folder added later (extra_model_paths.yaml) is searched under the pack's key too
    extra = tmp_path / "more_models"
    extra.mkdir()
    shutil.copy(comfyui / "models" / "diffusion_models" / "uniworld_osp2_dit_14B_Q4_K.gguf", extra / "another.gguf")
    folder_paths.add_model_folder_path("diffusion_models", str(extra))
    assert "another.gguf" in _choices(pack, "UniWorldDiTLoader", "dit_name")


# ---- bug 6: each loader offers only files of its kind

def test_each_loader_offers_only_files_of_its_kind(pack):
    offered = {(node, name): set(_choices(pack, node, name)) for node, name in (
        ("UniWorldDiTLoader", "dit_name"), ("UniWorldVLMLoader", "adapter_name"), ("UniWorldVAELoader", "vae_name"),
        ("UniWorldVLMLoader", "vlm"), ("UniWorldT5Loader", "t5_name"), ("UniWorldLoRALoader", "lora_name"))}
    sharded = os.path.join("sharded_dit", "diffusion_pytorch_model.safetensors.index.json")
    broken = "truncated_download.safetensors"  # kind unknown: offered, so that picking it explains it
    assert offered["UniWorldDiTLoader", "dit_name"] == {
        "uniworld_osp2_dit_14B_bf16.safetensors", "uniworld_osp2_dit_14B_Q4_K.gguf", "flashi2v_1.3B.safetensors",
        sharded, "toy_dit.safetensors", broken}
    assert offered["UniWorldVLMLoader", "adapter_name"] == {
        "uniworld_osp2_adapter.safetensors", "toy_adapter.safetensors", broken}
    assert offered["UniWorldVAELoader", "vae_name"] == {"wan_2.1_vae.safetensors", "Wan2.1_VAE.pth",
                                                        "toy_vae.safetensors"}
    assert offered["UniWorldVLMLoader", "vlm"] == {"qwen_2.5_vl_7b_fp8_scaled.safetensors", TEXT_ONLY_QWEN,
                                                   "Qwen2.5-VL-7B-Instruct", "toy_vlm"}
    assert offered["UniWorldT5Loader", "t5_name"] == {"umt5_xxl_fp8_e4m3fn_scaled.safetensors"}
    assert offered["UniWorldLoRALoader", "lora_name"] == {"motion_lora.safetensors"}


def test_tokenizer_combos_offer_tokenizers_of_their_model(pack):
    assert _choices(pack, "UniWorldVLMLoader", "tokenizer") == [
        "(tokenizer in the model folder)", "(ComfyUI's bundled Qwen2.5 tokenizer)", "Qwen2.5-VL-7B-Instruct",
        "toy_vlm"]
    assert _choices(pack, "UniWorldT5Loader", "tokenizer") == [
        "(tokenizer in the model file or folder)", "umt5-xxl-tokenizer"]


def test_style_select_offers_the_installed_miniatures_own_styles(pack):
    styles = _choices(pack, "UniWorldStyleSelect", "style")
    assert {"neon", "pencil sketch", "photo", "watercolor", "pixel art"} <= set(styles)


# ---- bug 1: the single-file Qwen2.5-VL with ComfyUI's bundled tokenizer encodes image + prompt

@pytest.mark.parametrize("vision", [True, False], ids=["with_vision_tower", "text_only"])
def test_single_file_vlm_encodes_with_comfyuis_bundled_tokenizer(pack, vision):
    name = "qwen_2.5_vl_7b_fp8_scaled.safetensors" if vision else TEXT_ONLY_QWEN
    nodes = pack.NODE_CLASS_MAPPINGS
    (encoder,) = nodes["UniWorldVLMLoader"]().load(name, "uniworld_osp2_adapter.safetensors",
                                                   "(ComfyUI's bundled Qwen2.5 tokenizer)", "fp32", "official", False)
    image = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    positive, negative = nodes["UniWorldVLMEncode"]().encode(encoder, image, "a cat walks", "")
    assert positive.context.shape == (1, 1024, 48) and torch.isfinite(positive.context).all()
    assert not torch.equal(positive.context, negative.context)


# ---- a file of another kind picked anyway still gets the loader's explanation

def test_a_file_of_another_kind_picked_anyway_is_explained_by_the_loader(pack):
    runner = importlib.import_module(f"{PACK_NAME}.nodes.headless.runner")
    errors = importlib.import_module(f"{PACK_NAME}.uniworld_core.errors")
    prompt = {"1": {"class_type": "UniWorldDiTLoader",
                    "inputs": {"dit_name": "uniworld_osp2_adapter.safetensors", "precision": "fp32",
                               "attention": "auto", "blocks_to_swap": -1, "prefetch_blocks": 1}}}
    assert validation_errors(prompt, runner.node_classes()) == []
    with pytest.raises(errors.CheckpointError, match="VLM encoder adapter"):
        runner.execute(prompt)
    for name in ("gone.safetensors", "../text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"):  # none outside
        prompt["1"]["inputs"]["dit_name"] = name
        assert any("not in models/diffusion_models" in e for e in validation_errors(prompt, runner.node_classes()))


def test_umt5_loader_reads_the_tokenizer_in_comfyuis_file_by_default(pack):
    nodes = pack.NODE_CLASS_MAPPINGS
    default = nodes["UniWorldT5Loader"].INPUT_TYPES()["required"]["tokenizer"][1]["default"]
    (encoder,) = nodes["UniWorldT5Loader"]().load("umt5_xxl_fp8_e4m3fn_scaled.safetensors", default, "fp32", False)
    positive, _ = nodes["UniWorldT5Encode"]().encode(encoder, "a cat walks", "")
    assert positive.context.shape == (1, 512, 16) and positive.context[0, 0].abs().sum() > 0


# ---- the DiT loader's fp8_matmul input reaches enable_fp8_matmul, and says what it did

@pytest.mark.parametrize("fp8_matmul", [True, False])
def test_the_dit_loaders_fp8_matmul_input_says_what_it_did(pack, comfyui, fp8_matmul, monkeypatch):
    core = importlib.import_module(f"{PACK_NAME}.uniworld_core")
    loaders = importlib.import_module(f"{PACK_NAME}.nodes.loaders")
    folder = comfyui / "models" / "diffusion_models"
    fp8 = folder / "dit_fp8_e4m3fn_scaled.safetensors"
    core.quantize_file(folder / "uniworld_osp2_dit_14B_bf16.safetensors", fp8, "fp8_e4m3fn")
    calls = []
    monkeypatch.setattr(loaders, "enable_fp8_matmul",
                        lambda model, device: calls.append(device) or core.enable_fp8_matmul(model, device))
    try:
        (handle,) = pack.NODE_CLASS_MAPPINGS["UniWorldDiTLoader"]().load(
            fp8.name, "fp32", "auto", 0, 1, fp8_matmul=fp8_matmul)
    finally:
        fp8.unlink()
    assert calls == ([loaders.comfy_env.compute_device()] if fp8_matmul else [])
    # on the CPU the layers keep the upcast path, and the node says so
    assert ("fp8 matmul: no layer can use it here" in handle.description) == fp8_matmul
    quant = importlib.import_module(f"{PACK_NAME}.uniworld_core.quant")
    layers = [m for m in handle.model.modules() if isinstance(m, quant.Fp8Linear)]
    assert layers and not any(m.scaled_matmul for m in layers)
