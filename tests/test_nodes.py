"""The ComfyUI node pack: definitions, workflows end to end, interrupts, bad workflows.

The pack is imported the way ComfyUI imports a custom-node folder (a package
named after a folder with dashes in it), with fake `folder_paths` and `comfy`
modules standing in for ComfyUI.
"""

from __future__ import annotations

import copy
import gc
import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch
from conftest import REPO
from PIL import Image
from safetensors.torch import save_file

from uniworld_core.presets.miniature import FILES, examples

WORKFLOWS = sorted(p for p in (REPO / "workflows").glob("*.json") if not p.name.endswith(".api.json"))
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN")


class FakeComfy:
    """Minimal folder_paths / comfy.utils / comfy.model_management for tests."""

    def __init__(self, models: Path):
        self.models, self.progress, self.interrupt_at = models, [], None
        self.step = 0

    def install(self, monkeypatch) -> None:
        folder_paths = types.ModuleType("folder_paths")
        folder_paths.models_dir = str(self.models)
        folder_paths.get_folder_paths = lambda kind: [str(self.models / kind)]
        folder_paths.get_filename_list = lambda kind: sorted(
            p.name for p in (self.models / kind).glob("*") if p.is_file()) if (self.models / kind).is_dir() else []
        comfy = types.ModuleType("comfy")
        comfy.__path__ = []
        utils = types.ModuleType("comfy.utils")
        fake = self

        class ProgressBar:
            def __init__(self, total):
                self.total = total

            def update_absolute(self, value, total=None, preview=None):
                fake.progress.append((value, total, preview))

        utils.ProgressBar = ProgressBar
        mm = types.ModuleType("comfy.model_management")
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unload_all_models = lambda: None
        mm.soft_empty_cache = lambda: None

        def throw_if_interrupted():
            fake.step += 1
            if fake.interrupt_at is not None and fake.step > fake.interrupt_at:
                raise InterruptedError("Processing interrupted")

        mm.throw_exception_if_processing_interrupted = throw_if_interrupted
        for name, module in {"folder_paths": folder_paths, "comfy": comfy, "comfy.utils": utils,
                             "comfy.model_management": mm}.items():
            monkeypatch.setitem(sys.modules, name, module)


def load_pack_like_comfyui(tmp_path: Path, name: str = "ComfyUI-UniWorld-OSP2"):
    folder = tmp_path / "custom_nodes" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not folder.exists():
        folder.symlink_to(REPO, target_is_directory=True)
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pack(tmp_path, monkeypatch):
    fake = FakeComfy(tmp_path / "models")
    fake.install(monkeypatch)
    module = load_pack_like_comfyui(tmp_path)
    module.fake = fake
    yield module
    for key in [k for k in sys.modules if k.startswith("ComfyUI-UniWorld-OSP2")]:
        del sys.modules[key]


def test_every_node_definition_is_well_formed(pack):
    mappings = pack.NODE_CLASS_MAPPINGS
    assert len(mappings) == 12 and set(mappings) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for name, cls in mappings.items():
        assert cls.CATEGORY == "UniWorld" and cls.DESCRIPTION, name
        assert callable(getattr(cls(), cls.FUNCTION)), name
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS), name
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"} and spec["required"], name
        for section in ("required", "optional"):
            for input_name, value in spec.get(section, {}).items():
                kind, options = value
                assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
                if isinstance(kind, list) and "default" in options:
                    assert options["default"] in kind, f"{name}.{input_name} default not in its list"
                if kind in ("INT", "FLOAT"):
                    assert options["min"] <= options["default"] <= options["max"], f"{name}.{input_name}"
                if kind in WIDGET_KINDS and kind != "STRING":
                    assert "default" in options, f"{name}.{input_name} has no default"


def test_style_tooltip_lists_all_twelve_styles(pack):
    from uniworld_core.conditioning.styles import BUILTIN_STYLES

    tooltip = pack.NODE_CLASS_MAPPINGS["UniWorldStyleSelect"].INPUT_TYPES()["required"]["style"][1]["tooltip"]
    for style in BUILTIN_STYLES:
        assert f"{style.name}: {style.description}" in tooltip


def test_importing_the_pack_is_light_and_needs_no_optional_packages(tmp_path):
    code = f"""
import importlib.util, sys
folder = {str(REPO)!r}
spec = importlib.util.spec_from_file_location("my-pack", folder + "/__init__.py", submodule_search_locations=[folder])
module = importlib.util.module_from_spec(spec); sys.modules["my-pack"] = module; spec.loader.exec_module(module)
assert module.NODE_CLASS_MAPPINGS
print(sorted(m for m in ("transformers", "diffusers", "av", "flash_attn", "sageattention", "torch_npu",
                         "comfy", "folder_paths") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_ui_converts_to_the_shipped_api_file(pack, path):
    runner = importlib.import_module(f"{pack.__name__}.nodes.headless.runner")
    workflow = importlib.import_module(f"{pack.__name__}.nodes.headless.workflow")
    api = json.loads(path.with_suffix(".api.json").read_text())
    converted = workflow.ui_to_api(json.loads(path.read_text()), runner.node_classes(), runner.display_names())
    assert converted == api


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_files_are_shareable(path):
    text = path.read_text()
    ui = json.loads(text)
    assert ui["version"] == 0.4
    allowed_core = {"LoadImage", "CreateVideo", "SaveVideo", "Note"}
    assert all(n["type"].startswith("UniWorld") or n["type"] in allowed_core for n in ui["nodes"])
    assert any(n["type"] == "Note" for n in ui["nodes"])
    for node in ui["nodes"]:
        builtin = set(FILES.values()) & set(map(str, node.get("widgets_values", [])))
        if node["type"].endswith("Loader") and node["type"] != "UniWorldLoRALoader" and not builtin:
            models = node["properties"]["models"]  # where to download each file (built-in files ship)
            assert models and all(m["url"].startswith("https://") and m["directory"] for m in models)
            for m in models:
                assert "/" not in m["name"] and m["name"] in node["widgets_values"]
    assert "/home/" not in text and "/work/" not in text and ":\\\\" not in text


# ---- end to end: every workflow through the runner, with tiny models under the workflows' file names

def _tiny_models(root: Path) -> Path:
    """Tiny random models saved as the files the workflows name; returns the Qwen tokenizer folder."""
    from test_conditioning import CORPUS, SPECIAL
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        UMT5Config,
        UMT5EncoderModel,
    )

    from uniworld_core.model.adapter import EncoderAdapter
    from uniworld_core.model.config import DiTConfig, VAEConfig
    from uniworld_core.model.dit import WanDiT
    from uniworld_core.model.vae import WanVAE
    from uniworld_core.weights.vlm import QWEN25VL_CHAT_TEMPLATE

    for kind in ("diffusion_models", "vae", "text_encoders", "loras"):
        (root / kind).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    # Qwen tokenizer (stands in for ComfyUI's bundled one) and a text-only single-file Qwen2.5-VL
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    fast.chat_template = QWEN25VL_CHAT_TEMPLATE
    qwen_tokenizer = root.parent / "comfy_qwen25_tokenizer"
    fast.save_pretrained(qwen_tokenizer)
    config = Qwen2_5_VLConfig(text_config=dict(
        hidden_size=128, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
        vocab_size=len(fast), rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=128))
    vlm = Qwen2_5_VLForConditionalGeneration(config)
    text_only = {k.replace("model.language_model.", "model."): v for k, v in vlm.state_dict().items()
                 if not k.startswith("model.visual.")}
    save_file(text_only, str(root / "text_encoders" / "qwen_2.5_vl_7b_fp8_scaled.safetensors"))
    save_file(EncoderAdapter(128, 64, 48).state_dict(),
              str(root / "diffusion_models" / "uniworld_osp2_adapter.safetensors"))
    # DiTs: text width 48 (adapter output) for Uniworld-OSP2.0, 16 (umT5 width) for FlashI2V-1.3B
    for name, text_dim in (("uniworld_osp2_dit_14B_bf16.safetensors", 48), ("flashi2v_1.3B.safetensors", 16)):
        dit = WanDiT(DiTConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=1, freq_dim=32, text_dim=text_dim))
        save_file(dit.state_dict(), str(root / "diffusion_models" / name))
    save_file(WanVAE(VAEConfig(base_dim=8)).state_dict(), str(root / "vae" / "wan_2.1_vae.safetensors"))
    # the low-VRAM workflow's GGUF, made by our tool (Q4_0: this tiny model's widths are not
    # multiples of the 256-wide K-quant blocks, so Q4_K would leave every matrix in F16)
    from uniworld_core.weights.quantize import quantize_file

    quantize_file(root / "diffusion_models" / "uniworld_osp2_dit_14B_bf16.safetensors",
                  root / "diffusion_models" / "uniworld_osp2_dit_14B_Q4_K.gguf", "Q4_0")
    # umT5 (Hugging Face layout, as ComfyUI's file) and its tokenizer folder
    words = sorted({w for line in CORPUS for w in line.replace(",", " ").replace(":", " ").split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    t5_tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t5_tok.normalizer, t5_tok.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    t5_tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=t5_tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
                            ).save_pretrained(root / "text_encoders" / "umt5-xxl-tokenizer")
    t5 = UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=4,
                                     relative_attention_num_buckets=8, feed_forward_proj="gated-gelu"))
    state = {k: v for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(state, str(root / "text_encoders" / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"))
    return qwen_tokenizer


SMALL = {"width": 64, "height": 48, "frames": 5, "steps": 3}


def _small_prompt(pack, path: Path) -> dict:
    """The workflow's API prompt with CPU-sized settings (the same overrides a user could make)."""
    runner = importlib.import_module(f"{pack.__name__}.nodes.headless.runner")
    prompt = runner.load_prompt(path)
    for entry in prompt.values():
        for key, value in SMALL.items():
            if key in entry["inputs"] and not isinstance(entry["inputs"][key], list):
                entry["inputs"][key] = value
    return prompt


@pytest.fixture(scope="module")
def quick_miniature(tmp_path_factory) -> Path:
    """A miniature model from the recipe's quick mode (the toy workflow's files)."""
    from training.miniature import QUICK, build

    out = tmp_path_factory.mktemp("miniature")
    build(out, QUICK, log=lambda *a: None)
    return out / "weights"


@pytest.fixture
def runnable(pack, tmp_path, monkeypatch, quick_miniature):
    monkeypatch.setenv("UNIWORLD_MINIATURE_DIR", str(quick_miniature))
    qwen_tokenizer = _tiny_models(tmp_path / "models")
    comfy_env = importlib.import_module(f"{pack.__name__}.nodes.comfy_env")
    monkeypatch.setattr(comfy_env, "comfy_qwen_tokenizer_dir", lambda: qwen_tokenizer)
    standins = importlib.import_module(f"{pack.__name__}.nodes.headless.standins")
    monkeypatch.setattr(standins.FOLDERS, "input", tmp_path / "input")
    monkeypatch.setattr(standins.FOLDERS, "output", tmp_path / "output")
    (tmp_path / "input").mkdir()
    Image.fromarray((torch.rand(60, 80, 3) * 255).to(torch.uint8).numpy()).save(tmp_path / "input" / "input.png")
    for example in examples():  # the toy workflow's input, as its Note tells users to copy it
        shutil.copy(example["image"], tmp_path / "input")
    return pack


def _video_frames_and_size(path: Path) -> tuple[int, tuple[int, int]]:
    import av

    with av.open(str(path)) as container:
        frames = [f for f in container.decode(video=0)]
    return len(frames), (frames[0].width, frames[0].height)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_end_to_end(runnable, path):
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    prompt = _small_prompt(runnable, path)
    ui = runner.execute(prompt)
    videos = [Path(v) for result in ui.values() for v in (result or {}).get("videos", [])]
    savers = [e for e in prompt.values() if e["class_type"] == "SaveVideo"]
    assert len(videos) == len(savers) > 0
    for video in videos:
        assert _video_frames_and_size(video) == (SMALL["frames"], (SMALL["width"], SMALL["height"]))
    steps = [p for p in runnable.fake.progress if p[1] == SMALL["steps"]]
    assert steps and all(p[2] is not None and p[2][0] == "JPEG" for p in steps), "every step shows a preview"


def test_interrupt_stops_sampling_at_the_next_step_and_frees_memory(runnable):
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    sampling = importlib.import_module(f"{runnable.__name__}.nodes.sampling")
    prompt = _small_prompt(runnable, REPO / "workflows" / "flashi2v_1.3B_umt5.json")
    sampler = next(e for e in prompt.values() if e["class_type"] == "UniWorldSampler")
    sampler["inputs"]["steps"] = 6
    seen = []
    real_preview = sampling.latent_preview

    def watching_preview(latents):
        seen.append(weakref.ref(latents))
        return real_preview(latents)

    sampling.latent_preview = watching_preview
    # In this workflow the sampler's steps are the first progress updates: the user's cancel
    # arrives during step 3 and is honoured when step 3 reports.
    runnable.fake.step, runnable.fake.interrupt_at = 0, 2
    try:
        with pytest.raises(InterruptedError):
            runner.execute(prompt)
    finally:
        sampling.latent_preview = real_preview
    sampled = [p for p in runnable.fake.progress if p[1] == 6]
    assert [p[0] for p in sampled] == [1, 2], "stopped right after step 2"
    gc.collect()
    assert seen and all(ref() is None for ref in seen), "sampling latents still alive after the interrupt"


BAD = {
    "missing input": (lambda p: p[_node(p, "UniWorldSampler")]["inputs"].pop("vae"),
                      r"node \d+ \(UniWorld Sampler \(FlashI2V\)\): input 'vae' is missing"),
    "wrong link type": (lambda p: p[_node(p, "UniWorldSampler")]["inputs"].update(
        vae=[_node(p, "UniWorldDiTLoader"), 0]),
        r"input 'vae' receives UNIWORLD_DIT from node \d+ \(UniWorldDiTLoader\); expected UNIWORLD_VAE"),
    "value out of range": (lambda p: p[_node(p, "UniWorldSampler")]["inputs"].update(steps=0),
                           r"input 'steps' is 0, outside 1..1000"),
    "unknown node": (lambda p: p.update({"99": {"class_type": "FancyUpscaler", "inputs": {}}}),
                     r"node 99 \(FancyUpscaler\): is not a known node type"),
    "missing model file": (lambda p: p[_node(p, "UniWorldDiTLoader")]["inputs"].update(dit_name="gone.safetensors"),
                           r"input 'dit_name' names 'gone.safetensors', which is not in models/diffusion_models"),
}


def _node(prompt, class_type) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == class_type)


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_workflows_name_the_node_and_input(runnable, case):
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    workflow = importlib.import_module(f"{runnable.__name__}.nodes.headless.workflow")
    prompt = copy.deepcopy(_small_prompt(runnable, REPO / "workflows" / "flashi2v_1.3B_umt5.json"))
    mutate, message = BAD[case]
    mutate(prompt)
    with pytest.raises(workflow.WorkflowError, match=message):
        runner.execute(prompt)


def test_runner_command_line(runnable, tmp_path, capsys):
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    path = tmp_path / "small.api.json"
    path.write_text(json.dumps(_small_prompt(runnable, REPO / "workflows" / "flashi2v_1.3B_umt5.json")))
    standins = importlib.import_module(f"{runnable.__name__}.nodes.headless.standins")
    assert runner.main([str(path), "--models", str(tmp_path / "models"), "--input", str(standins.FOLDERS.input),
                        "--output", str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out and list((tmp_path / "out" / "video").glob("*.mp4"))


@pytest.mark.parametrize("mode", [2, 4], ids=["muted", "bypassed"])
def test_muted_and_bypassed_nodes(pack, mode):
    runner = importlib.import_module(f"{pack.__name__}.nodes.headless.runner")
    workflow = importlib.import_module(f"{pack.__name__}.nodes.headless.workflow")
    ui = json.loads((REPO / "workflows" / "uniworld_osp2_i2sv.json").read_text())
    style = next(n for n in ui["nodes"] if n["type"] == "UniWorldStyleSelect")
    style["mode"] = mode
    api = workflow.ui_to_api(ui, runner.node_classes(), runner.display_names())
    assert str(style["id"]) not in api
    encode = next(v for v in api.values() if v["class_type"] == "UniWorldVLMEncode")
    assert "style" not in encode["inputs"]  # nothing of type STYLE upstream to pass through
    assert all(v["class_type"] != "Note" for v in api.values())


def test_bypassed_node_passes_its_input_through(pack):
    """A bypassed LoRA loader hands the DiT it received to the next node."""
    runner = importlib.import_module(f"{pack.__name__}.nodes.headless.runner")
    workflow = importlib.import_module(f"{pack.__name__}.nodes.headless.workflow")
    ui = json.loads((REPO / "workflows" / "flashi2v_1.3B_umt5.json").read_text())
    dit = next(n for n in ui["nodes"] if n["type"] == "UniWorldDiTLoader")
    sampler = next(n for n in ui["nodes"] if n["type"] == "UniWorldSampler")
    lora_id, link_in, link_out = 100, 100, 101
    ui["nodes"].append({"id": lora_id, "type": "UniWorldLoRALoader", "mode": 4,
                        "widgets_values": ["x.safetensors", 1.0],
                        "inputs": [{"name": "model", "type": "UNIWORLD_DIT", "link": link_in}],
                        "outputs": [{"name": "model", "type": "UNIWORLD_DIT", "links": [link_out]}]})
    old = next(i for i in sampler["inputs"] if i["name"] == "model")["link"]
    ui["links"] = [link for link in ui["links"] if link[0] != old]
    ui["links"] += [[link_in, dit["id"], 0, lora_id, 0, "UNIWORLD_DIT"],
                    [link_out, lora_id, 0, sampler["id"], 0, "UNIWORLD_DIT"]]
    next(i for i in sampler["inputs"] if i["name"] == "model")["link"] = link_out
    api = workflow.ui_to_api(ui, runner.node_classes(), runner.display_names())
    assert str(lora_id) not in api
    assert api[str(sampler["id"])]["inputs"]["model"] == [str(dit["id"]), 0]


def test_single_file_vlm_takes_comfyuis_tokenizer_by_default(runnable):
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    prompt = _small_prompt(runnable, REPO / "workflows" / "uniworld_osp2_i2sv.json")
    loader = next(e for e in prompt.values() if e["class_type"] == "UniWorldVLMLoader")
    loader["inputs"]["tokenizer"] = "(tokenizer in the model folder)"
    assert runner.execute(prompt)  # the single file found ComfyUI's bundled tokenizer


# ---- the start frame is encoded once, by the Fourier Cutoff node, and the sampler checks it is the same picture

def test_fourier_cutoff_encodes_the_start_frame_once_for_the_sampler(runnable, monkeypatch):
    WanVAE = importlib.import_module(f"{runnable.__name__}.uniworld_core.model.vae").WanVAE  # the pack's own copy
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    calls = []
    real = WanVAE.encode_image
    monkeypatch.setattr(WanVAE, "encode_image", lambda self, pixels: calls.append(1) or real(self, pixels))
    prompt = _small_prompt(runnable, REPO / "workflows" / "uniworld_osp2_i2sv.json")
    assert "fourier" in prompt[_node(prompt, "UniWorldSampler")]["inputs"]
    runner.execute(prompt)
    assert len(calls) == 1, "the sampler re-encoded the start image"
    # without the Fourier node the sampler encodes it itself, once
    calls.clear()
    sampler = prompt[_node(prompt, "UniWorldSampler")]
    del sampler["inputs"]["fourier"], prompt[_node(prompt, "UniWorldFourierCutoff")]
    runner.execute(prompt)
    assert len(calls) == 1


@pytest.mark.parametrize("change", ["another image", "another size", "no image at all"])
def test_sampler_refuses_a_start_frame_that_does_not_match(runnable, tmp_path, change):
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    errors = importlib.import_module(f"{runnable.__name__}.uniworld_core.errors")
    prompt = _small_prompt(runnable, REPO / "workflows" / "uniworld_osp2_i2sv.json")
    sampler = prompt[_node(prompt, "UniWorldSampler")]["inputs"]
    if change == "another image":
        Image.fromarray((torch.rand(60, 80, 3) * 255).to(torch.uint8).numpy()).save(tmp_path / "input" / "b.png")
        prompt["99"] = {"class_type": "LoadImage", "inputs": {"image": "b.png"}}
        sampler["start_image"], message = ["99", 0], "differs from the one the Fourier Cutoff node encoded"
    elif change == "another size":
        sampler["width"], message = 80, "a start frame encoded at 64x48"
    else:
        del sampler["start_image"], sampler["fourier"]
        message = "no start image"
    with pytest.raises(errors.InputError, match=message):
        runner.execute(prompt)


OLD_WORKFLOWS = sorted((REPO / "tests" / "data" / "old_workflows").glob("*.json"))


@pytest.mark.parametrize("path", OLD_WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_files_of_earlier_releases_still_run(runnable, path):
    """Workflows saved by 0.1.0 (the Fourier node's widget was then named energy_ratio) load and run."""
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    prompt = _small_prompt(runnable, path)
    fourier = prompt[_node(prompt, "UniWorldFourierCutoff")]["inputs"]
    assert fourier["fourier_ratio"] == 0.1  # the value saved under the old name, read by position
    ui = runner.execute(prompt)
    assert any((result or {}).get("videos") for result in ui.values())
