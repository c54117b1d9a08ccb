"""The ComfyUI node pack: definitions, workflows end to end, interrupts, bad workflows.

The pack is imported the way ComfyUI imports a custom-node folder (a package
named after a folder with dashes in it), with stand-ins of `folder_paths` and
`comfy` that behave as ComfyUI's do (tests/comfyui_standins.py): only files with
registered extensions are listed, and the bundled Qwen2.5 tokenizer carries a
text-only chat template.
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
import weakref
from pathlib import Path

import pytest
import torch
from comfyui_standins import ComfyStandIn, write_model_files
from conftest import REPO
from PIL import Image

from uniworld_core.presets.miniature import FILES, examples

WORKFLOWS = sorted(p for p in (REPO / "workflows").glob("*.json") if not p.name.endswith(".api.json"))
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN")


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
    fake = ComfyStandIn(tmp_path / "comfyui")
    fake.install(monkeypatch)
    module = load_pack_like_comfyui(tmp_path)
    module.fake = fake
    yield module
    for key in [k for k in sys.modules if k.startswith("ComfyUI-UniWorld-OSP2")]:
        del sys.modules[key]


def test_every_node_definition_is_well_formed(pack):
    mappings = pack.NODE_CLASS_MAPPINGS
    assert len(mappings) == 14 and set(mappings) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
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


COMFY_MODEL_FOLDERS = {"diffusion_models", "text_encoders", "vae", "loras"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_files_are_shareable(path):
    text = path.read_text()
    ui = json.loads(text)
    assert ui["version"] == 0.4
    allowed_core = {"LoadImage", "CreateVideo", "SaveVideo", "Note"}
    assert all(n["type"].startswith("UniWorld") or n["type"] in allowed_core for n in ui["nodes"])
    notes = "\n".join(n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "Note")
    assert notes
    urls = []
    for node in ui["nodes"]:
        values = [v for v in node.get("widgets_values", []) if isinstance(v, str)]
        for model in node["properties"].get("models", []):
            # what the frontend's missing-models dialog accepts for a download: a .safetensors file on
            # huggingface.co, in a folder ComfyUI knows, named as the widget names it
            assert model["url"].startswith("https://huggingface.co/") and "/resolve/" in model["url"]
            assert model["url"].endswith("/" + model["name"]) and model["name"].endswith(".safetensors")
            assert model["directory"] in COMFY_MODEL_FOLDERS and model["name"] in values
            urls.append(model["url"])
        if node["type"].endswith("Loader") and node["type"] != "UniWorldLoRALoader":
            listed = {m["name"] for m in node["properties"].get("models", [])}
            for value in set(values) & MODEL_LIKE:
                assert value in listed or value in notes or value in FILES.values(), f"{value}: no source given"
    assert len(urls) == len(set(urls)), "one URL per file (the dialog merges entries that share a URL)"
    assert "/home/" not in text and "/work/" not in text and ":\\\\" not in text


MODEL_LIKE = {"uniworld_osp2_dit_14B_bf16.safetensors", "uniworld_osp2_adapter.safetensors",
              "uniworld_osp2_dit_14B_Q4_K.gguf", "flashi2v_1.3B.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors",
              "wan_2.1_vae.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"}


def _boxes(ui: dict) -> list[tuple[float, float, float, float]]:
    """Each node's box as the frontend draws it: its title bar (30 px) above its position."""
    return [(n["pos"][0], n["pos"][1] - 30, n["size"][0], n["size"][1] + 30) for n in ui["nodes"]]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_layout_has_no_overlaps_and_opens_below_the_top_bar(path):
    ui = json.loads(path.read_text())
    boxes = _boxes(ui)
    for i, (ax, ay, aw, ah) in enumerate(boxes):
        for bx, by, bw, bh in boxes[i + 1:]:
            assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), ui["nodes"][i]["type"]
    view = ui["extra"]["ds"]
    (ox, oy), scale = view["offset"], view["scale"]
    # canvas pixel = (position + offset) * scale; the canvas begins below the top bar
    assert min((x + ox) * scale for x, _, _, _ in boxes) >= 0 and min((y + oy) * scale for _, y, _, _ in boxes) >= 0
    assert scale >= 8 / 14, "the frontend draws no text below this zoom"


# ---- end to end: every workflow through the runner, with tiny models under the workflows' file names

def _bundled_tokenizer_size(pack) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(pack.fake.qwen_tokenizer))


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
    write_model_files(pack.fake.base / "models", _bundled_tokenizer_size(pack))
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
    added = sum(e["inputs"]["add_frames"] for e in prompt.values() if e["class_type"] == "UniWorldExtendVideo")
    for video in videos:  # Extend Video nodes add their frames to the Sampler's
        assert _video_frames_and_size(video) == (SMALL["frames"] + added, (SMALL["width"], SMALL["height"]))
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
                           r"dit_name: the model 'gone.safetensors' is not in models/diffusion_models"),
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
    models = runnable.fake.base / "models"
    assert runner.main([str(path), "--models", str(models), "--input", str(standins.FOLDERS.input),
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


def test_the_cache_node_feeds_the_sampler(request, capsys):
    """UniWorld Cache -> UniWorld Sampler in a workflow, through the headless runner."""
    import importlib

    runnable = request.getfixturevalue("runnable")
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    prompt = _small_prompt(runnable, REPO / "workflows" / "flashi2v_1.3B_umt5.json")
    prompt["90"] = {"class_type": "UniWorldCache", "inputs": {
        "policy": "adaptive+wan", "threshold": 5.0, "warmup_steps": 1, "end": 1.0, "attention_interval": 2,
        "attention_start": 0.0, "uncond_interval": 2, "uncond_start": 0.0}}
    prompt[_node(prompt, "UniWorldSampler")]["inputs"]["cache"] = ["90", 0]
    runner.execute(prompt)
    printed = capsys.readouterr().out
    assert "[UniWorld] cache:" in printed and "DiT forwards run" in printed


def test_extend_video_matches_colours_unless_switched_off(runnable, monkeypatch):
    """Continuation chunks are matched to their context by default; a workflow saved before the input existed
    (no match_colours) gets the default. Compared on VAE Decode's frames (H.264 would mix the frames)."""
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    standins = importlib.import_module(f"{runnable.__name__}.nodes.headless.standins")
    made = []
    monkeypatch.setattr(standins.StandInCreateVideo, "create",
                        lambda self, images, fps, audio=None: (made.append(images.clone()), (None,))[1])
    monkeypatch.setattr(standins.StandInSaveVideo, "save", lambda self, *a, **k: {"ui": {}, "result": ()})
    videos = {}
    for match in (True, False, None):
        prompt = _small_prompt(runnable, REPO / "workflows" / "long_video.json")
        for key in [k for k, v in prompt.items() if v["class_type"] == "UniWorldExtendVideo"]:
            prompt[key]["inputs"].update(add_frames=4, context_frames=1, match_colours=match)
            if match is None:
                del prompt[key]["inputs"]["match_colours"]
        runner.execute(prompt)
        videos[match] = made.pop()
    assert torch.equal(videos[None], videos[True])
    first = SMALL["frames"]  # the Sampler's run is the same either way; the extensions differ
    assert torch.equal(videos[True][:first], videos[False][:first])
    assert not torch.allclose(videos[True][first:], videos[False][first:], atol=1e-3)


@pytest.mark.parametrize("mode", ["continuation", "fallback: chained image-to-video"])
def test_extend_video_in_both_modes(runnable, mode):
    """Extend Video twice in each mode; the fallback's runs are decoded apart and joined by VAE Decode."""
    runner = importlib.import_module(f"{runnable.__name__}.nodes.headless.runner")
    prompt = _small_prompt(runnable, REPO / "workflows" / "long_video.json")
    extends = [k for k, v in prompt.items() if v["class_type"] == "UniWorldExtendVideo"]
    for key in extends:
        prompt[key]["inputs"].update(mode=mode, add_frames=4, context_frames=1)
    ui = runner.execute(prompt)
    video = next(Path(v) for result in ui.values() for v in (result or {}).get("videos", []))
    assert _video_frames_and_size(video)[0] == SMALL["frames"] + 4 * len(extends)


# ---- previews follow the VAE: its channel count and its spatial factor (a miniature VAE may differ from Wan2.1's)
@pytest.mark.parametrize("channels, scale", [(16, 8), (4, 4), (8, 4)])
def test_previews_follow_the_vae_channels_and_scale(pack, channels, scale):
    from uniworld_core.sampling.pipeline import StartFrame

    sampling = importlib.import_module(f"{pack.__name__}.nodes.sampling")
    latents = torch.randn(1, channels, 3, 6, 5)
    shown = torch.tensor(sampling.latent_preview(latents).getdata(), dtype=torch.float32)
    assert shown.shape[1] == 3 and shown.std(0).min() > 0, "every colour of the preview carries channels"
    start = StartFrame(latents[:, :, :1], torch.rand(1, channels, 1, 6, 5), 0.1, 5 * scale, 6 * scale, "digest")
    preview = sampling.fourier_preview(start, scale)
    assert preview.shape == (1, 6 * scale, 5 * scale, 3), "the preview has the start image's size"
