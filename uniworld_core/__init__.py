"""uniworld_core: the Uniworld-OSP2.0 / FlashI2V model stack, usable without ComfyUI.

The public API (everything a script, the ComfyUI nodes, training and the
benchmarks need) is importable from here:

    import uniworld_core as uw

    dit = uw.load("dit.safetensors", "dit").model             # any supported DiT file, on the CPU
    placed = uw.place_dit(dit, "cuda", budget_bytes=8 << 30)  # block swap when it would not fit
    vae = uw.load("wan_2.1_vae.safetensors", "vae").model.to("cuda")
    conditioner = uw.vlm_conditioner("Qwen2.5-VL-7B-Instruct", "adapter.safetensors",
                                     device="cuda", offload=True)
    image = uw.load_image("input.png")
    positive, negative = conditioner.encode(image, "the girl smiles", uw.StyleSpec(uw.style("watercolor")))
    frames = uw.generate(dit, vae, image, positive, negative, uw.VideoSettings(), uw.SamplerSettings())
    uw.save_webp(frames, "out.webp")

Subpackages, bottom to top (each imports only those below it): `quant`,
`model`, then `sampling` / `memory` / `weights` side by side, `conditioning`,
`presets`; the basics `errors`, `progress`, `device`, `media` sit under all.
See docs/architecture.md.
"""

__version__ = "0.1.0"

from .conditioning import BUILTIN_STYLES, Conditioner, Style, StyleSpec, all_styles, umt5_conditioner, vlm_conditioner
from .device import pick_device, resolve_dtype
from .errors import CheckpointError, InputError, Interrupted, UniWorldError
from .media import load_image, read_webp, save_mp4, save_webp
from .memory import AUTO, DiTPlacement, Placement, place_dit
from .model import DiTConfig, VAEConfig, WanDiT, WanVAE, compile_blocks, get_attention
from .presets import load_miniature, tiny_stack
from .progress import ProgressHook, print_progress
from .quant import enable_fp8_matmul, use_fp8_matmul
from .sampling import (
    REPORT,
    ContinuationSettings,
    Defaults,
    SamplerSettings,
    StartFrame,
    VideoSettings,
    decode_frames,
    encode_start,
    generate,
    generate_latents,
    generate_long,
)
from .weights import Loaded, applied, convert_file, inspect_file, load, quantize_file, read_lora


def style(name: str) -> Style:
    """A built-in style by name (see BUILTIN_STYLES), or an InputError listing them."""
    styles = all_styles()
    if name not in styles:
        raise InputError(f"the style '{name}'", f"one of {', '.join(styles)}")
    return styles[name]


__all__ = [
    "__version__",
    # loading and placing
    "load", "Loaded", "inspect_file", "convert_file", "quantize_file", "read_lora", "applied",
    "place_dit", "DiTPlacement", "Placement", "AUTO", "pick_device", "resolve_dtype", "get_attention",
    "compile_blocks", "use_fp8_matmul", "enable_fp8_matmul",
    # the networks
    "WanDiT", "WanVAE", "DiTConfig", "VAEConfig",
    # conditioning
    "Conditioner", "StyleSpec", "Style", "style", "BUILTIN_STYLES", "all_styles", "vlm_conditioner",
    "umt5_conditioner",
    # generating, with its settings
    "generate", "generate_latents", "generate_long", "ContinuationSettings", "decode_frames", "encode_start",
    "StartFrame", "VideoSettings",
    "SamplerSettings", "Defaults", "REPORT", "ProgressHook", "print_progress",
    # presets
    "load_miniature", "tiny_stack",
    # media
    "load_image", "save_webp", "save_mp4", "read_webp",
    # errors
    "UniWorldError", "InputError", "CheckpointError", "Interrupted",
]
