"""Build the shareable workflows: UI format (version 0.4) and their API-format twins.

    python workflows/build_workflows.py

Each workflow uses only UniWorld nodes and ComfyUI core nodes (LoadImage,
CreateVideo, SaveVideo, Note) and bare model file names. A loader's
`properties.models` lists only files that are published, each with the URL of
the file itself on Hugging Face (the frontend's missing-models dialog
downloads from there, and only .safetensors files from huggingface.co); files
not published yet, and files users make themselves, are explained in the
workflow's Note. Node positions come from a column layout computed from each
node's size (its widgets, slots and text), so nodes cannot overlap, and the
saved view puts the graph below the frontend's top bar. The API files are
produced by the same UI->API conversion the runner uses.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from run_workflow import load_pack  # noqa: E402
from uniworld_core.presets.miniature import DEFAULTS as TOY  # noqa: E402  the card's sampling settings

REPACKAGED = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
QWEN_FILE = "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders"
# published files: (url of the file, ComfyUI model folder)
PUBLISHED = {
    "qwen_2.5_vl_7b_fp8_scaled.safetensors": (f"{QWEN_FILE}/qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                              "text_encoders"),
    "wan_2.1_vae.safetensors": (f"{REPACKAGED}/vae/wan_2.1_vae.safetensors", "vae"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (
        f"{REPACKAGED}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
}
FLASHI2V_RELEASE = "https://huggingface.co/yunyangge/FlashI2V-1.3B"
# files with no download URL: (ComfyUI model folder, where they come from)
UNPUBLISHED = {
    "uniworld_osp2_dit_14B_bf16.safetensors": (
        "diffusion_models", "the Uniworld-OSP2.0 14B DiT. Not published yet: it will come with the "
        "Uniworld-OSP2.0 model release; any file name works, the loader reads what the file is."),
    "uniworld_osp2_adapter.safetensors": (
        "diffusion_models", "the Uniworld-OSP2.0 encoder adapter. Not published yet: it comes with the same "
        "release (or train your own: python -m training train, see docs/training.md)."),
    "uniworld_osp2_dit_14B_Q4_K.gguf": (
        "diffusion_models", "made by you from the DiT: python -m uniworld_core quantize "
        "uniworld_osp2_dit_14B_bf16.safetensors uniworld_osp2_dit_14B_Q4_K.gguf --type Q4_K"),
    "flashi2v_1.3B.safetensors": (
        "diffusion_models", f"FlashI2V-1.3B, released at {FLASHI2V_RELEASE} as the official checkpoint; "
        "put that file here and pick it in the DiT loader (.pt is read safely), or convert it: "
        "python -m uniworld_core convert <file> flashi2v_1.3B.safetensors --dtype bf16"),
}
COMFY_TOKENIZER = "(ComfyUI's bundled Qwen2.5 tokenizer)"
SAME_FOLDER = "(tokenizer in the model folder)"
UMT5_OWN_TOKENIZER = "(tokenizer in the model file or folder)"
PROMPT = "the scene comes alive: the subject moves naturally, gentle camera push-in"

# LiteGraph's measures (frontend 1.27): a node's title bar sits above its position.
TITLE, SLOT, WIDGET = 30, 20, 24
GAP_X, GAP_Y = 60, 60  # room for the node-source badge drawn above each title
TEXTAREA = 80  # a multiline text widget
EXTRA_HEIGHT = {"LoadImage": 240, "SaveVideo": 200}  # image preview; video player after a run
WIDE = {"UniWorldVLMLoader": 420, "UniWorldDiTLoader": 380, "UniWorldT5Loader": 420, "UniWorldVLMEncode": 400,
        "UniWorldT5Encode": 400, "UniWorldSampler": 340}
# The canvas of a 1600x1000 window (below the frontend's 78-px top bar, right of its 64-px side bar), and
# the zoom a workflow opens at: the frontend draws no text below 8/14 (its low-quality mode), so at least
# 0.7; a graph larger than the canvas at that zoom opens at its top-left corner.
CANVAS, MIN_SCALE, MARGIN = (1536, 922), 0.7, 40
MINIMAP = 270  # width of the frontend's minimap, in the canvas' bottom-right corner: kept clear


class Graph:
    """A LiteGraph (ComfyUI UI-format) workflow under construction."""

    def __init__(self, classes: dict[str, type]):
        self.classes, self.nodes, self.links = classes, [], []
        self.workflow = importlib.import_module(f"{PACK}.nodes.headless.workflow")

    def node(self, kind: str, widgets: list, title: str | None = None, models: list[str] = (),
             width: int | None = None) -> dict:
        node = {"id": len(self.nodes) + 1, "type": kind, "pos": [0, 0], "size": [0, 0], "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                "properties": {"Node name for S&R": kind}, "widgets_values": widgets}
        if title:
            node["title"] = title
        published = [m for m in models if m in PUBLISHED]
        if published:
            node["properties"]["models"] = [{"name": m, "url": PUBLISHED[m][0], "directory": PUBLISHED[m][1]}
                                            for m in published]
        if kind != "Note":
            for name, input_kind, options, _ in self.workflow.input_specs(self.classes[kind]):
                entry = {"name": name, "type": "COMBO" if isinstance(input_kind, list) else input_kind, "link": None}
                if self.workflow.is_widget(input_kind, options):
                    entry["widget"] = {"name": name}
                node["inputs"].append(entry)
            cls = self.classes[kind]
            names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
            node["outputs"] = [{"name": n, "type": t, "links": [], "slot_index": i}
                               for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))]
        node["size"] = self._size(node, width)
        self.nodes.append(node)
        return node

    def _size(self, node: dict, width: int | None) -> list[int]:
        """At least what the frontend computes for the node (it enlarges smaller ones on load)."""
        if node["type"] == "Note":
            width = width or 760
            lines = sum(1 + len(line) * 8 // (width - 30) for line in node["widgets_values"][0].split("\n"))
            return [width, 40 + 17 * lines]
        height = SLOT * max(1, sum("widget" not in i for i in node["inputs"]), len(node["outputs"]))
        for name, kind, options, _ in self.workflow.input_specs(self.classes[node["type"]]):
            if self.workflow.is_widget(kind, options):
                height += TEXTAREA if options.get("multiline") else WIDGET
                height += WIDGET * self.workflow.extra_widget_values(name, kind, options)  # seed control, upload
        height += 14 + EXTRA_HEIGHT.get(node["type"], 0)
        return [width or WIDE.get(node["type"], 320), int(math.ceil(height / 10) * 10)]

    def resize_note(self, note: dict, width: int) -> None:
        note["size"] = self._size(note, width)

    def relink(self, target: dict, name: str, source: dict, slot: int) -> None:
        """Point `target`'s input `name` at another source (its old link removed)."""
        index = self._slot(target, name)
        old = target["inputs"][index]["link"]
        for node in self.nodes:
            for output in node["outputs"]:
                if old in output["links"]:
                    output["links"].remove(old)
        self.links = [link for link in self.links if link[0] != old]
        target["inputs"][index]["link"] = None
        self.link(source, slot, target, name)

    def link(self, source: dict, slot: int, target: dict, name: str) -> None:
        link_id = max((link[0] for link in self.links), default=0) + 1  # ids stay unique after a relink
        kind = source["outputs"][slot]["type"]
        self.links.append([link_id, source["id"], slot, target["id"], self._slot(target, name), kind])
        source["outputs"][slot]["links"].append(link_id)
        target["inputs"][self._slot(target, name)]["link"] = link_id

    @staticmethod
    def _slot(node: dict, name: str) -> int:
        return next(i for i, entry in enumerate(node["inputs"]) if entry["name"] == name)

    def columns(self, columns: list[list[dict]], x: int, y: int) -> tuple[int, int]:
        """Place columns of nodes left to right from (x, y) (the top of the first title); returns right, bottom."""
        bottom = y
        for column in columns:
            top = y
            for node in column:
                node["pos"] = [x, top + TITLE]
                top += TITLE + node["size"][1] + GAP_Y
            bottom = max(bottom, top - GAP_Y)
            x += max(n["size"][0] for n in column) + GAP_X
        return x - GAP_X, bottom

    def to_json(self) -> dict:
        left = min(n["pos"][0] for n in self.nodes)
        top = min(n["pos"][1] - TITLE for n in self.nodes)
        right = max(n["pos"][0] + n["size"][0] for n in self.nodes)
        bottom = max(n["pos"][1] + n["size"][1] for n in self.nodes)
        room = (CANVAS[0] - 2 * MARGIN - MINIMAP, CANVAS[1] - 2 * MARGIN)
        scale = round(max(MIN_SCALE, min(1.0, room[0] / (right - left), room[1] / (bottom - top))), 2)
        # canvas pixel = (position + offset) * scale: the graph's top-left corner MARGIN px inside the canvas
        offset = [round(MARGIN / scale - left), round(MARGIN / scale - top)]
        return {"last_node_id": len(self.nodes), "last_link_id": max((link[0] for link in self.links), default=0),
                "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": scale, "offset": offset}}, "version": 0.4}


def _tail(g: Graph, dit, vae, positive, negative, image, prefix: str, fourier=None, frames: int = 49,
          seed: int = 42, tiled: bool = False, size: tuple[int, int, int] = (832, 480, 50),
          cfg_shift: tuple[float, float] = (5.0, 7.0)) -> list[list[dict]]:
    """Sampler -> VAE Decode -> CreateVideo -> SaveVideo; returns their layout columns."""
    width, height, steps = size
    sampler = g.node("UniWorldSampler", [width, height, frames, steps, *cfg_shift, seed, "fixed"])
    for name, (src, slot) in {"model": (dit, 0), "vae": (vae, 0), "positive": (positive, 0),
                              "negative": (negative, 1), "start_image": (image, 0)}.items():
        g.link(src, slot, sampler, name)
    if fourier is not None:
        g.link(fourier, 0, sampler, "fourier")
    decode = g.node("UniWorldVAEDecode", [tiled, 32, 8])
    g.link(vae, 0, decode, "vae")
    g.link(sampler, 0, decode, "latent")
    video = g.node("CreateVideo", [16.0])
    g.link(decode, 0, video, "images")
    save = g.node("SaveVideo", [prefix, "auto", "auto"])
    g.link(video, 0, save, "video")
    return [[sampler], [decode, video], [save]]


def _models_note(names: list[str]) -> str:
    lines = []
    for name in names:
        if name in PUBLISHED:
            lines.append(f"- models/{PUBLISHED[name][1]}/{name}\n  download: {PUBLISHED[name][0]}")
        else:
            lines.append(f"- models/{UNPUBLISHED[name][0]}/{name}\n  {UNPUBLISHED[name][1]}")
    return "\n".join(lines)


def _note(g: Graph, text: str, files: list[str]) -> dict:
    return g.node("Note", [text + "\n\nModel files (published ones also download from the missing-models "
                           "dialog):\n" + _models_note(files)])


OSP2_FILES = ["uniworld_osp2_dit_14B_bf16.safetensors", "uniworld_osp2_adapter.safetensors",
              "qwen_2.5_vl_7b_fp8_scaled.safetensors", "wan_2.1_vae.safetensors"]


def _osp2_inputs(g: Graph, files: list[str], note: str, vae_offload: bool = False):
    """Note, Load Image, DiT / VAE / VLM loaders: the start of every Uniworld-OSP2.0 workflow."""
    note = _note(g, note, files)
    image = g.node("LoadImage", ["input.png", "image"])
    dit = g.node("UniWorldDiTLoader", [files[0], "auto", "auto", -1, 1], models=[files[0]])
    vae = g.node("UniWorldVAELoader", [files[3], "auto", vae_offload], models=[files[3]])
    vlm = g.node("UniWorldVLMLoader", [files[2], files[1], COMFY_TOKENIZER, "auto", "official", True],
                 models=[files[2], files[1]])
    return note, image, dit, vae, vlm


def _styled_encode(g: Graph, vlm, image, style_name: str):
    style = g.node("UniWorldStyleSelect", [style_name, 1.0, "", "none", 0.5])
    encode = g.node("UniWorldVLMEncode", [PROMPT, ""])
    g.link(vlm, 0, encode, "text_encoder")
    g.link(image, 0, encode, "image")
    g.link(style, 0, encode, "style")
    return style, encode


def _with_note(g: Graph, note: dict, columns: list[list[dict]]) -> dict:
    """The Note on top, as wide as the columns below it."""
    right, _ = g.columns(columns, 0, 0)
    g.resize_note(note, max(760, right))
    _, bottom = g.columns([[note]], 0, 0)
    g.columns(columns, 0, bottom + GAP_Y)
    return g.to_json()


def uniworld_osp2_i2sv(classes) -> dict:
    g = Graph(classes)
    note, image, dit, vae, vlm = _osp2_inputs(g, OSP2_FILES, (
        "Uniworld-OSP2.0 image-to-stylized-video. Load an image, describe the motion, pick a style. "
        "Qwen2.5-VL reads image + prompt + style; the FlashI2V DiT animates the image with Fourier guidance "
        "(Fourier ratio 0.1) and latent shifting; 50 steps, CFG 5, shift 7."))
    style, encode = _styled_encode(g, vlm, image, "watercolor")
    fourier = g.node("UniWorldFourierCutoff", [832, 480, 0.1])
    g.link(vae, 0, fourier, "vae")
    g.link(image, 0, fourier, "image")
    tail = _tail(g, dit, vae, encode, encode, image, "video/uniworld_osp2", fourier)
    sampler, *rest = tail
    return _with_note(g, note, [[image, dit, vae], [vlm, style, encode], [fourier, *sampler],
                                [n for column in rest for n in column]])


def flashi2v_13b_umt5(classes) -> dict:
    g = Graph(classes)
    files = ["flashi2v_1.3B.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"]
    note = _note(g, "FlashI2V-1.3B image-to-video with umT5 text conditioning (the public FlashI2V "
                    "checkpoint). Fits about 6 GB of VRAM in bf16. ComfyUI's umT5 file carries its own "
                    "tokenizer; for the official .pth, put the google/umt5-xxl tokenizer folder in "
                    "models/text_encoders and pick it in the loader.", files)
    image = g.node("LoadImage", ["input.png", "image"])
    dit = g.node("UniWorldDiTLoader", [files[0], "auto", "auto", -1, 1], models=[files[0]])
    vae = g.node("UniWorldVAELoader", [files[2], "auto", False], models=[files[2]])
    t5 = g.node("UniWorldT5Loader", [files[1], UMT5_OWN_TOKENIZER, "auto", True], models=[files[1]])
    encode = g.node("UniWorldT5Encode", [PROMPT, ""])
    g.link(t5, 0, encode, "text_encoder")
    tail = _tail(g, dit, vae, encode, encode, image, "video/flashi2v_1.3B")
    sampler, *rest = tail
    return _with_note(g, note, [[image, dit, vae], [t5, encode], sampler, [n for column in rest for n in column]])


def style_comparison(classes) -> dict:
    g = Graph(classes)
    note, image, dit, vae, vlm = _osp2_inputs(g, OSP2_FILES, (
        "One image, three styles, same seed: compare how each style transforms the same motion. "
        "Edit the Style Select nodes to try others."))
    bands = []
    for name in ["watercolor", "anime", "cyberpunk"]:  # one band of columns per style
        style, encode = _styled_encode(g, vlm, image, name)
        sampler, decode_video, save = _tail(g, dit, vae, encode, encode, image,
                                            f"video/style_{name.replace(' ', '_')}")
        bands.append([[style, encode], sampler, decode_video, save])
    inputs = [[image, vlm, dit, vae]]
    width = g.columns(inputs, 0, 0)[0] + GAP_X + g.columns(bands[0], 0, 0)[0]
    g.resize_note(note, width)
    _, top = g.columns([[note]], 0, 0)
    right, _ = g.columns(inputs, 0, top + GAP_Y)
    y = top + GAP_Y
    for band in bands:
        y = g.columns(band, right + GAP_X, y)[1] + GAP_Y
    return g.to_json()


def low_vram_gguf(classes) -> dict:
    g = Graph(classes)
    files = ["uniworld_osp2_dit_14B_Q4_K.gguf", *OSP2_FILES[1:]]
    note, image, dit, vae, vlm = _osp2_inputs(g, files, (
        "Uniworld-OSP2.0 on a consumer GPU: the 14B DiT as GGUF Q4_K (about 9 GB, its blocks stay 4-bit in "
        "VRAM and are dequantised layer by layer; blocks that do not fit stream from CPU RAM), the fp8 "
        "Qwen2.5-VL and the VAE kept in CPU RAM between uses, and the VAE decoded in spatial tiles."),
        vae_offload=True)
    style, encode = _styled_encode(g, vlm, image, "anime")
    tail = _tail(g, dit, vae, encode, encode, image, "video/uniworld_osp2_low_vram", tiled=True)
    sampler, *rest = tail
    return _with_note(g, note, [[image, dit, vae], [vlm, style, encode], sampler,
                                [n for column in rest for n in column]])


TOY_PROMPT = "a large red square spins anticlockwise over night"  # the caption of examples/toy_photo_0.png
TOY_IMAGE = "toy_photo_0.png"


def _miniature_inputs(g: Graph) -> tuple:
    """The miniature model's loaders, its example photo, the watercolor-styled encode and the Fourier cutoff."""
    image = g.node("LoadImage", [TOY_IMAGE, "image"])
    dit = g.node("UniWorldDiTLoader", ["toy_dit.safetensors", "fp32", "auto", -1, 1])
    vae = g.node("UniWorldVAELoader", ["toy_vae.safetensors", "fp32", False])
    vlm = g.node("UniWorldVLMLoader", ["toy_vlm", "toy_adapter.safetensors", SAME_FOLDER, "fp32", "official",
                                       False])
    style, encode = _styled_encode(g, vlm, image, "watercolor")
    encode["widgets_values"][0] = TOY_PROMPT
    fourier = g.node("UniWorldFourierCutoff", [64, 64, 0.1])
    g.link(vae, 0, fourier, "vae")
    g.link(image, 0, fourier, "image")
    return image, dit, vae, vlm, style, encode, fourier


def toy_world_miniature(classes) -> dict:
    """The built-in miniature model: runs anywhere, no downloads (its files ship with the pack)."""
    g = Graph(classes)
    note = g.node("Note", ["The built-in miniature Uniworld-OSP2.0 model, trained by this pack on a procedural "
                           "toy world (64x64 clips of shapes that slide, bounce or spin). Nothing to download: its "
                           "files ship with the pack and appear in the loaders as toy_*.\n\nInput: a toy photo "
                           "(examples in uniworld_core/miniature_model/examples/; copy "
                           f"{TOY_IMAGE} into ComfyUI/input). Styles it knows: watercolor, pixel art, neon, "
                           f"pencil sketch (all in Style Select). {TOY.width}x{TOY.height}, {TOY.frames} frames, "
                           f"{TOY.steps} steps, cfg {TOY.cfg:g}, shift {TOY.shift:g} (the card's sampling settings)."])
    image, dit, vae, vlm, style, encode, fourier = _miniature_inputs(g)
    tail = _tail(g, dit, vae, encode, encode, image, "video/uniworld_toy", fourier, frames=TOY.frames,
                 size=(TOY.width, TOY.height, TOY.steps), cfg_shift=(TOY.cfg, TOY.shift))
    sampler, *rest = tail
    return _with_note(g, note, [[image, dit, vae], [vlm, style, encode], [fourier, *sampler],
                                [n for column in rest for n in column]])


def long_video(classes) -> dict:
    """The miniature model's clip made about four times longer: the Sampler's run, then four Extend Video runs."""
    g = Graph(classes)
    note = g.node("Note", ["A long video with the built-in miniature model: one 17-frame run, then four UniWorld "
                           "Extend Video nodes, each adding 12 frames (3 latent frames) from the last 2 latent "
                           "frames of the video so far (continuation: the window the model was trained on, in its "
                           "card); 65 frames in all. With weights that were "
                           "not trained for continuation, set each Extend Video's mode to the fallback (chained "
                           f"image-to-video with colour matching). Copy {TOY_IMAGE} from "
                           "uniworld_core/miniature_model/examples/ into ComfyUI/input."])
    image, dit, vae, vlm, style, encode, fourier = _miniature_inputs(g)
    sampler, *rest = _tail(g, dit, vae, encode, encode, image, "video/uniworld_long", fourier, frames=TOY.frames,
                           size=(TOY.width, TOY.height, TOY.steps), cfg_shift=(TOY.cfg, TOY.shift))
    decode = rest[0][0]
    previous, extends = sampler[0], []
    for n in range(4):
        extend = g.node("UniWorldExtendVideo", [12, 2, "continuation", TOY.steps, TOY.cfg, TOY.shift, 100 + n,
                                                "fixed", True])
        for name, (src, slot) in {"model": (dit, 0), "vae": (vae, 0), "positive": (encode, 0),
                                  "negative": (encode, 1), "fourier": (fourier, 0), "latent": (previous, 0)}.items():
            g.link(src, slot, extend, name)
        previous = extend
        extends.append(extend)
    g.relink(decode, "latent", previous, 0)
    return _with_note(g, note, [[image, dit, vae], [vlm, style, encode], [fourier, *sampler], extends,
                                [n for column in rest for n in column]])


WORKFLOWS = {"toy_world_miniature": toy_world_miniature, "long_video": long_video,
             "uniworld_osp2_i2sv": uniworld_osp2_i2sv,
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
