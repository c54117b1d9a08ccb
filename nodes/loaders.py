"""Loader nodes: DiT, VAE, Qwen2.5-VL + adapter, umT5, LoRA."""

from __future__ import annotations

from ..uniworld_core import (
    AUTO,
    REPORT,
    InputError,
    Placement,
    compile_blocks,
    enable_fp8_matmul,
    get_attention,
    load,
    place_dit,
    read_lora,
    resolve_dtype,
    umt5_conditioner,
    vlm_conditioner,
)
from ..uniworld_core.conditioning import MODES
from ..uniworld_core.model import available_backends
from . import comfy_env, model_files
from .types import CATEGORY, DIT, TEXT_ENCODER, VAE, DiTHandle, TextEncoderHandle, VAEHandle, spec

PRECISIONS = ["auto", "bf16", "fp16", "fp32"]

SAME_FOLDER = "(tokenizer in the model folder)"
COMFY_TOKENIZER = "(ComfyUI's bundled Qwen2.5 tokenizer)"
UMT5_OWN_TOKENIZER = "(tokenizer in the model file or folder)"


def _precision(name: str):
    return resolve_dtype(name, comfy_env.compute_device())


def models(kind: str, kinds: tuple[str, ...], folders: bool = True) -> list[str]:
    """What a loader offers from a ComfyUI model folder: only files and folders of its kinds."""
    return model_files.offered(comfy_env.folder_entries(kind), kinds, folders)


def _present(kind: str, **names: str) -> bool | str:
    """VALIDATE_INPUTS of a loader: a named model need only be in its folder.

    ComfyUI then skips its own "value not in list" check for these inputs, so a
    file of another kind picked anyway (an older workflow, an API prompt) reaches
    the loader and gets its explanation of what the file is.
    """
    for input_name, name in names.items():
        problem = comfy_env.model_problem(kind, name)
        if problem is not True:
            return f"{input_name}: {problem}"
    return True


class UniWorldDiTLoader:
    DESCRIPTION = ("Loads a FlashI2V / Uniworld-OSP2.0 DiT from models/diffusion_models (safetensors, "
                   "sharded, .pt, fp8; official, ComfyUI or diffusers keys). The model kind and size are "
                   "read from the weights; wrong files are refused with an explanation.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (DIT,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The diffusion transformer, ready for the UniWorld Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "dit_name": spec(models("diffusion_models", model_files.DIT), "FlashI2V / Uniworld-OSP2.0 DiT "
                             "weights in models/diffusion_models (safetensors, sharded index, .pt, GGUF, fp8).",
                             model_folder="diffusion_models"),
            "precision": spec(PRECISIONS, "Compute precision: auto = bf16 on GPUs, fp32 on the CPU. fp8 "
                              "files keep their fp8 weights either way.", default="auto"),
            "attention": spec(["auto", "sdpa", "flash_attn", "sage", "npu", "chunked", "measure"],
                              "Attention kernel: auto picks flash-attn/NPU when installed, else PyTorch SDPA; "
                              "chunked bounds memory; measure times them on first use and keeps the fastest.",
                              default="auto"),
        }, "optional": {
            "blocks_to_swap": spec("INT", "DiT blocks kept in CPU RAM and streamed to the GPU just in time "
                                   "(copies overlap compute). -1 = planned from free VRAM for "
                                   f"{REPORT.width}x{REPORT.height}, {REPORT.frames} frames; 0 = all on the GPU.",
                                   default=AUTO, min=AUTO, max=100),
            "prefetch_blocks": spec("INT", "How many swapped blocks are copied ahead of use.", default=1,
                                    min=0, max=8),
            "compile": spec("BOOLEAN", "Compile the DiT block with torch.compile at the first step (once per "
                            "video size; faster steps after that). Falls back to uncompiled with a message "
                            "when the compiler is missing or fails.", default=False),
            "fp8_matmul": spec("BOOLEAN", "fp8 (e4m3) files on GPUs with fp8 tensor cores (RTX 40xx, H100 "
                               "and later): multiply the wide layers in fp8 instead of upcasting their weights. "
                               "Faster, a little less exact (the activations are rounded to fp8 too). Other "
                               "files and devices run as usual, and the log says so.", default=False),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, dit_name):
        return _present("diffusion_models", dit_name=dit_name)

    def load(self, dit_name, precision, attention, blocks_to_swap=AUTO, prefetch_blocks=1, compile=False,
             fp8_matmul=False):
        device = comfy_env.compute_device()
        if attention not in ("auto", "measure") and attention not in available_backends():
            raise InputError(f"the attention backend '{attention}'", f"one of {available_backends()}",
                             "Install its package or choose auto.")
        comfy_env.make_room()
        # GGUF/fp8/bf16 weights are loaded to the CPU first, so swapped blocks never occupy VRAM
        loaded = load(comfy_env.model_path("diffusion_models", dit_name), "dit", "cpu",
                      _precision(precision), get_attention(attention, device))
        placed = place_dit(loaded.model, device, comfy_env.free_device_memory(), blocks_to_swap, prefetch_blocks,
                           REPORT.latent_grid())
        description = f"{loaded.description}; {placed.summary()}"
        if fp8_matmul:
            description += "; " + enable_fp8_matmul(loaded.model, device)
        if compile:
            compile_blocks(loaded.model, log=lambda message: print(f"[UniWorld] {message}"))
            description += "; blocks compiled with torch.compile"
        print(f"[UniWorld] {description}")
        return (DiTHandle(loaded.model, description, placed),)


class UniWorldVAELoader:
    DESCRIPTION = "Loads the Wan2.1 VAE (official .pth, ComfyUI wan_2.1_vae.safetensors, or diffusers)."
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The Wan2.1 VAE for encoding the start image and decoding the video.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": spec(models("vae", model_files.VAE), "Wan2.1 VAE weights in models/vae.",
                             model_folder="vae"),
            "precision": spec(PRECISIONS, "VAE precision: auto = bf16 on GPUs, fp32 on the CPU.",
                              default="auto"),
        }, "optional": {
            "offload": spec("BOOLEAN", "Keep the VAE in CPU RAM between encodes/decodes.", default=False),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, vae_name):
        return _present("vae", vae_name=vae_name)

    def load(self, vae_name, precision, offload=False):
        loaded = load(comfy_env.model_path("vae", vae_name), "vae", "cpu", _precision(precision))
        placement = Placement(loaded.model, comfy_env.compute_device(), offload)
        return (VAEHandle(loaded.model, loaded.description, placement),)


def _tokenizer_choices(family: str) -> list[str]:
    """The tokenizer combo: where-the-model-keeps-it first, then folders holding a tokenizer of `family`."""
    special = [SAME_FOLDER, COMFY_TOKENIZER] if family == "qwen" else [UMT5_OWN_TOKENIZER]
    return special + model_files.tokenizer_folders(comfy_env.folder_entries("text_encoders"), family)


def _tokenizer_present(choice: str, special: tuple[str, ...]) -> bool | str:
    return True if choice in special else _present("text_encoders", tokenizer=choice)


def _tokenizer_folder(choice: str, model_source):
    if choice in (SAME_FOLDER, UMT5_OWN_TOKENIZER):
        if model_source.is_dir():
            return model_source
        return comfy_env.comfy_qwen_tokenizer_dir()  # a single file: ComfyUI's bundled tokenizer, if any
    if choice == COMFY_TOKENIZER:
        folder = comfy_env.comfy_qwen_tokenizer_dir()
        if folder is None:
            raise InputError("no ComfyUI installation to take the Qwen2.5 tokenizer from",
                             "a tokenizer folder", "Pick the Qwen2.5-VL-7B-Instruct folder as tokenizer.")
        return folder
    return comfy_env.model_path("text_encoders", choice)


class UniWorldVLMLoader:
    DESCRIPTION = ("Loads Qwen2.5-VL-7B-Instruct (a Hugging Face folder or ComfyUI's single file "
                   "qwen_2.5_vl_7b*.safetensors) and the Uniworld-OSP2.0 encoder adapter.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("VLM + adapter, for UniWorld VLM Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vlm": spec(models("text_encoders", model_files.VLM),
                        "Qwen2.5-VL-7B-Instruct folder or single file in models/text_encoders.",
                        model_folder="text_encoders"),
            "adapter_name": spec(models("diffusion_models", model_files.ADAPTER),
                                 "The Uniworld-OSP2.0 encoder adapter (fc1/fc2) in models/diffusion_models.",
                                 model_folder="diffusion_models"),
            "tokenizer": spec(_tokenizer_choices("qwen"), "Where the tokenizer files are: the model folder (for a "
                              "single file: ComfyUI's bundled Qwen2.5 tokenizer), ComfyUI's bundled tokenizer, "
                              "or another folder.", default=SAME_FOLDER),
            "precision": spec(PRECISIONS, "VLM precision (auto = bf16 on GPUs).", default="auto"),
            "mode": spec(list(MODES), "official = the released protocol (language model only; needed by "
                         "the released adapter). full_vision = real image features, for new adapters.",
                         default="official"),
            "offload": spec("BOOLEAN", "Keep the 15 GB VLM in CPU RAM between encodings.", default=True),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, vlm, adapter_name, tokenizer):
        found = _present("text_encoders", vlm=vlm)
        found = found if found is not True else _present("diffusion_models", adapter_name=adapter_name)
        return found if found is not True else _tokenizer_present(tokenizer, (SAME_FOLDER, COMFY_TOKENIZER))

    def load(self, vlm, adapter_name, tokenizer, precision, mode, offload):
        comfy_env.make_room()
        source = comfy_env.model_path("text_encoders", vlm)
        conditioner = vlm_conditioner(source, comfy_env.model_path("diffusion_models", adapter_name),
                                      _tokenizer_folder(tokenizer, source), _precision(precision),
                                      comfy_env.compute_device(), offload, mode)
        return (TextEncoderHandle(conditioner, "vlm", f"Qwen2.5-VL ({mode}) + adapter"),)


class UniWorldT5Loader:
    DESCRIPTION = ("Loads umT5-XXL (official .pth, Hugging Face folder or ComfyUI's umt5_xxl file, which "
                   "carries its own tokenizer) for FlashI2V-1.3B.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("umT5 text encoder, for UniWorld T5 Encode.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "t5_name": spec(models("text_encoders", model_files.UMT5),
                            "umT5 weights (file or folder) in models/text_encoders.", model_folder="text_encoders"),
            "tokenizer": spec(_tokenizer_choices("t5"), "The umT5 tokenizer: the one in the model (ComfyUI's "
                              "umt5_xxl files and Hugging Face folders carry it), or a folder with its files "
                              "(for the official .pth).", default=UMT5_OWN_TOKENIZER),
            "precision": spec(PRECISIONS, "Encoder precision (auto = bf16 on GPUs).", default="auto"),
            "offload": spec("BOOLEAN", "Keep umT5 in CPU RAM between encodings.", default=True),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, t5_name, tokenizer):
        found = _present("text_encoders", t5_name=t5_name)
        return found if found is not True else _tokenizer_present(tokenizer, (UMT5_OWN_TOKENIZER, SAME_FOLDER))

    def load(self, t5_name, tokenizer, precision, offload):
        comfy_env.make_room()
        source = comfy_env.model_path("text_encoders", t5_name)
        folder = None if tokenizer in (UMT5_OWN_TOKENIZER, SAME_FOLDER) else _tokenizer_folder(tokenizer, source)
        conditioner = umt5_conditioner(source, folder, _precision(precision), comfy_env.compute_device(), offload)
        return (TextEncoderHandle(conditioner, "umt5", f"umT5 ({t5_name})"),)


class UniWorldLoRALoader:
    DESCRIPTION = ("Adds a LoRA to the DiT (ComfyUI key formats). Chain several; the base model is not "
                   "modified, the LoRA is applied while sampling.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = (DIT,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The DiT with this LoRA added.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": spec(DIT, "The DiT (or the output of another LoRA loader)."),
            "lora_name": spec(models("loras", model_files.LORA, folders=False), "LoRA file in models/loras.",
                              model_folder="loras"),
            "strength": spec("FLOAT", "How strongly the LoRA applies (0 = off, negative inverts).",
                             default=1.0, min=-4.0, max=4.0, step=0.05),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        return _present("loras", lora_name=lora_name)

    def apply(self, model, lora_name, strength):
        if strength == 0:
            return (model,)
        patches = read_lora(comfy_env.model_path("loras", lora_name), model.model, strength)
        return (model.with_lora(patches),)


NODES = {"UniWorldDiTLoader": (UniWorldDiTLoader, "UniWorld DiT Loader"),
         "UniWorldVAELoader": (UniWorldVAELoader, "UniWorld VAE Loader"),
         "UniWorldVLMLoader": (UniWorldVLMLoader, "UniWorld VLM Loader (Qwen2.5-VL + adapter)"),
         "UniWorldT5Loader": (UniWorldT5Loader, "UniWorld umT5 Loader"),
         "UniWorldLoRALoader": (UniWorldLoRALoader, "UniWorld LoRA Loader")}
