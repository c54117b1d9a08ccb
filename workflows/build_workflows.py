"""Build the shareable workflows: UI format (version 0.4) and their API-format twins.

    python workflows/build_workflows.py

Each workflow uses only UniWorld nodes and ComfyUI core nodes (LoadImage,
CreateVideo, SaveVideo, Note), bare model file names, and lists in each
loader's `properties.models` where its files come from. The API files are
produced by the same UI->API conversion the runner uses.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from run_workflow import load_pack  # noqa: E402

REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
QWEN_FILE = "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders"
MODELS = {
    "uniworld_osp2_dit_14B_bf16.safetensors": ("https://github.com/PKU-YuanGroup", "diffusion_models"),
    "uniworld_osp2_adapter.safetensors": ("https://github.com/PKU-YuanGroup", "diffusion_models"),
    "qwen_2.5_vl_7b_fp8_scaled.safetensors": (f"{QWEN_FILE}/qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                              "text_encoders"),
    "wan_2.1_vae.safetensors": (f"{REPACKAGED}/vae/wan_2.1_vae.safetensors", "vae"),
    "flashi2v_1.3B.safetensors": ("https://huggingface.co/yunyangge/FlashI2V-1.3B", "diffusion_models"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (
        f"{REPACKAGED}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
    "umt5-xxl-tokenizer": ("https://huggingface.co/google/umt5-xxl", "text_encoders"),
    "uniworld_osp2_dit_14B_Q4_K.gguf": ("https://github.com/PKU-YuanGroup", "diffusion_models"),
}
COMFY_TOKENIZER = "(ComfyUI's bundled Qwen2.5 tokenizer)"
SAME_FOLDER = "(tokenizer in the model folder)"
PROMPT = "the scene comes alive: the subject moves naturally, gentle camera push-in"


class Graph:
    """A LiteGraph (ComfyUI UI-format) workflow under construction."""

    def __init__(self, classes: dict[str, type]):
        self.classes, self.nodes, self.links = classes, [], []
        self.column = 0

    def node(self, kind: str, widgets: list, pos: tuple[int, int], title: str | None = None,
             models: list[str] = (), size=(320, 160)) -> dict:
        node = {"id": len(self.nodes) + 1, "type": kind, "pos": list(pos), "size": list(size), "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                "properties": {"Node name for S&R": kind}, "widgets_values": widgets}
        if title:
            node["title"] = title
        if models:
            node["properties"]["models"] = [{"name": m, "url": MODELS[m][0], "directory": MODELS[m][1]}
                                            for m in models]
        if kind != "Note":
            pack_workflow = importlib.import_module(f"{PACK}.nodes.headless.workflow")
            for name, input_kind, options, _ in pack_workflow.input_specs(self.classes[kind]):
                entry = {"name": name, "type": "COMBO" if isinstance(input_kind, list) else input_kind, "link": None}
                if pack_workflow.is_widget(input_kind, options):
                    entry["widget"] = {"name": name}
                node["inputs"].append(entry)
            cls = self.classes[kind]
            names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
            node["outputs"] = [{"name": n, "type": t, "links": [], "slot_index": i}
                               for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))]
        self.nodes.append(node)
        return node

    def link(self, source: dict, slot: int, target: dict, name: str) -> None:
        link_id = len(self.links) + 1
        kind = source["outputs"][slot]["type"]
        self.links.append([link_id, source["id"], slot, target["id"], self._slot(target, name), kind])
        source["outputs"][slot]["links"].append(link_id)
        target["inputs"][self._slot(target, name)]["link"] = link_id

    @staticmethod
    def _slot(node: dict, name: str) -> int:
        return next(i for i, entry in enumerate(node["inputs"]) if entry["name"] == name)

    def to_json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def _tail(g: Graph, dit, vae, positive, negative, image, x: int, y: int, prefix: str, fourier=None,
          frames: int = 49, seed: int = 42, tiled: bool = False, size: tuple[int, int, int] = (832, 480, 50),
          cfg_shift: tuple[float, float] = (5.0, 7.0)):
    """Sampler -> VAE Decode -> CreateVideo -> SaveVideo (size: width, height, steps; the report's cfg and shift)."""
    width, height, steps = size
    sampler = g.node("UniWorldSampler", [width, height, frames, steps, *cfg_shift, seed, "fixed"], (x, y),
                     size=(340, 380))
    for name, (src, slot) in {"model": (dit, 0), "vae": (vae, 0), "positive": (positive, 0),
                              "negative": (negative, 1), "start_image": (image, 0)}.items():
        g.link(src, slot, sampler, name)
    if fourier is not None:
        g.link(fourier, 0, sampler, "fourier")
    decode = g.node("UniWorldVAEDecode", [tiled, 32, 8], (x + 380, y))
    g.link(vae, 0, decode, "vae")
    g.link(sampler, 0, decode, "latent")
    video = g.node("CreateVideo", [16.0], (x + 740, y), size=(240, 80))
    g.link(decode, 0, video, "images")
    save = g.node("SaveVideo", [prefix, "auto", "auto"], (x + 1020, y), size=(320, 320))
    g.link(video, 0, save, "video")


def _models_note(names: list[str]) -> str:
    return "\n".join(f"- models/{MODELS[n][1]}/{n}  <- {MODELS[n][0]}" for n in names)


OSP2_FILES = ["uniworld_osp2_dit_14B_bf16.safetensors", "uniworld_osp2_adapter.safetensors",
              "qwen_2.5_vl_7b_fp8_scaled.safetensors", "wan_2.1_vae.safetensors"]


def _osp2_inputs(g: Graph, files: list[str], note: str, vae_offload: bool = False):
    """Note, Load Image, DiT / VAE / VLM loaders: the start of every Uniworld-OSP2.0 workflow."""
    g.node("Note", [note + "\n\nModel files:\n" + _models_note(files)], (0, -260), size=(700, 220))
    image = g.node("LoadImage", ["input.png", "image"], (0, 0), size=(300, 320))
    dit = g.node("UniWorldDiTLoader", [files[0], "auto", "auto", -1, 1], (0, 380), models=[files[0]])
    vae = g.node("UniWorldVAELoader", [files[3], "auto", vae_offload], (0, 560), models=[files[3]])
    vlm = g.node("UniWorldVLMLoader", [files[2], files[1], COMFY_TOKENIZER, "auto", "official", True], (360, 0),
                 models=[files[2], files[1]], size=(360, 220))
    return image, dit, vae, vlm


def _styled_encode(g: Graph, vlm, image, style_name: str, pos: tuple[int, int]):
    style = g.node("UniWorldStyleSelect", [style_name, 1.0, "", "none", 0.5], pos)
    encode = g.node("UniWorldVLMEncode", [PROMPT, ""], (pos[0] + 400, pos[1]), size=(400, 300))
    g.link(vlm, 0, encode, "text_encoder")
    g.link(image, 0, encode, "image")
    g.link(style, 0, encode, "style")
    return encode


def uniworld_osp2_i2sv(classes) -> dict:
    g = Graph(classes)
    image, dit, vae, vlm = _osp2_inputs(g, OSP2_FILES, (
        "Uniworld-OSP2.0 image-to-stylized-video. Load an image, describe the motion, pick a style. "
        "Qwen2.5-VL reads image + prompt + style; the FlashI2V DiT animates the image with Fourier guidance "
        "(Fourier ratio 0.1) and latent shifting; 50 steps, CFG 5, shift 7."))
    encode = _styled_encode(g, vlm, image, "watercolor", (360, 260))
    fourier = g.node("UniWorldFourierCutoff", [832, 480, 0.1], (760, 340))
    g.link(vae, 0, fourier, "vae")
    g.link(image, 0, fourier, "image")
    _tail(g, dit, vae, encode, encode, image, 1200, 0, "video/uniworld_osp2", fourier)
    return g.to_json()


def flashi2v_13b_umt5(classes) -> dict:
    g = Graph(classes)
    files = ["flashi2v_1.3B.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "umt5-xxl-tokenizer",
             "wan_2.1_vae.safetensors"]
    g.node("Note", ["FlashI2V-1.3B image-to-video with umT5 text conditioning (the public FlashI2V "
                    "checkpoint). Fits about 6 GB of VRAM in bf16.\n\nModel files:\n" + _models_note(files)],
           (0, -240), size=(700, 200))
    image = g.node("LoadImage", ["input.png", "image"], (0, 0), size=(300, 320))
    dit = g.node("UniWorldDiTLoader", [files[0], "auto", "auto", -1, 1], (0, 380), models=[files[0]])
    vae = g.node("UniWorldVAELoader", [files[3], "auto", False], (0, 560), models=[files[3]])
    t5 = g.node("UniWorldT5Loader", [files[1], files[2], "auto", True], (360, 0), models=[files[1], files[2]])
    encode = g.node("UniWorldT5Encode", [PROMPT, ""], (760, 0), size=(400, 280))
    g.link(t5, 0, encode, "text_encoder")
    _tail(g, dit, vae, encode, encode, image, 1200, 0, "video/flashi2v_1.3B")
    return g.to_json()


def style_comparison(classes) -> dict:
    g = Graph(classes)
    image, dit, vae, vlm = _osp2_inputs(g, OSP2_FILES, (
        "One image, three styles, same seed: compare how each style transforms the same motion. "
        "Edit the Style Select nodes to try others."))
    for row, name in enumerate(["watercolor", "anime", "cyberpunk"]):
        encode = _styled_encode(g, vlm, image, name, (760, row * 460))
        _tail(g, dit, vae, encode, encode, image, 1600, row * 460, f"video/style_{name.replace(' ', '_')}")
    return g.to_json()


def low_vram_gguf(classes) -> dict:
    g = Graph(classes)
    files = ["uniworld_osp2_dit_14B_Q4_K.gguf", *OSP2_FILES[1:]]
    image, dit, vae, vlm = _osp2_inputs(g, files, (
        "Uniworld-OSP2.0 on a consumer GPU: the 14B DiT as GGUF Q4_K (about 9 GB, its blocks stay 4-bit in "
        "VRAM and are dequantised layer by layer; blocks that do not fit stream from CPU RAM), the fp8 "
        "Qwen2.5-VL and the VAE kept in CPU RAM between uses, and the VAE decoded in spatial tiles. Make the "
        "GGUF yourself with: python -m uniworld_core quantize <dit>.safetensors "
        "uniworld_osp2_dit_14B_Q4_K.gguf --type Q4_K"), vae_offload=True)
    encode = _styled_encode(g, vlm, image, "anime", (360, 260))
    _tail(g, dit, vae, encode, encode, image, 1200, 0, "video/uniworld_osp2_low_vram", tiled=True)
    return g.to_json()


TOY_PROMPT = "a large red square spins anticlockwise over night"  # the caption of examples/toy_photo_0.png
TOY_IMAGE = "toy_photo_0.png"


def toy_world_miniature(classes) -> dict:
    """The built-in miniature model: runs anywhere, no downloads (its files ship with the pack)."""
    g = Graph(classes)
    g.node("Note", ["The built-in miniature Uniworld-OSP2.0 model, trained by this pack on a procedural toy "
                    "world (64x64 clips of shapes that slide, bounce or spin). Nothing to download: its files "
                    "appear in the loaders as toy_*.\n\nInput: a toy photo (examples in "
                    f"uniworld_core/miniature_model/examples/; copy {TOY_IMAGE} into ComfyUI/input). Styles it "
                    "knows: watercolor, pixel art (and neon, pencil sketch from the command line). "
                    "64x64, 17 frames, 30 steps, cfg 2, shift 3 (the card's sampling settings)."],
           (0, -260), size=(700, 220))
    image = g.node("LoadImage", [TOY_IMAGE, "image"], (0, 0), size=(300, 320))
    dit = g.node("UniWorldDiTLoader", ["toy_dit.safetensors", "fp32", "auto", -1, 1], (0, 380))
    vae = g.node("UniWorldVAELoader", ["toy_vae.safetensors", "fp32", False], (0, 560))
    vlm = g.node("UniWorldVLMLoader", ["toy_vlm", "toy_adapter.safetensors", SAME_FOLDER, "fp32", "official",
                                       False], (360, 0), size=(360, 220))
    style = g.node("UniWorldStyleSelect", ["watercolor", 1.0, "", "none", 0.5], (360, 260))
    encode = g.node("UniWorldVLMEncode", [TOY_PROMPT, ""], (760, 260), size=(400, 300))
    g.link(vlm, 0, encode, "text_encoder")
    g.link(image, 0, encode, "image")
    g.link(style, 0, encode, "style")
    fourier = g.node("UniWorldFourierCutoff", [64, 64, 0.1], (760, 600))
    g.link(vae, 0, fourier, "vae")
    g.link(image, 0, fourier, "image")
    _tail(g, dit, vae, encode, encode, image, 1200, 0, "video/uniworld_toy", fourier, frames=17,
          size=(64, 64, 30), cfg_shift=(2.0, 3.0))
    return g.to_json()


WORKFLOWS = {"toy_world_miniature": toy_world_miniature, "uniworld_osp2_i2sv": uniworld_osp2_i2sv,
             "flashi2v_1.3B_umt5": flashi2v_13b_umt5,
             "style_comparison": style_comparison, "low_vram_gguf": low_vram_gguf}
PACK = "uniworld_osp2_pack"


def build(out: Path = HERE) -> list[Path]:
    pack = load_pack(PACK)
    runner = importlib.import_module(f"{pack.__name__}.nodes.headless.runner")
    workflow = importlib.import_module(f"{pack.__name__}.nodes.headless.workflow")
    classes = runner.node_classes()
    written = []
    for name, make in WORKFLOWS.items():
        ui = make(classes)
        api = workflow.ui_to_api(ui, classes, runner.display_names())
        for path, data in ((out / f"{name}.json", ui), (out / f"{name}.api.json", api)):
            path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            written.append(path)
    return written


if __name__ == "__main__":
    for path in build():
        print(f"wrote {path.relative_to(HERE.parent)}")
