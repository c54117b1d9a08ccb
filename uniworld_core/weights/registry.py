"""The loader registry: any supported weight file -> a ready model and a description.

    loaded = load("wan2.1_flashi2v_14B_fp8_scaled.safetensors", expect="dit")
    loaded.model, loaded.description  # "FlashI2V DiT, 14B config (40 layers, dim 5120), ..."
    load("Qwen2.5-VL-7B-Instruct/", expect="vlm").processor  # text encoders bring their front end

Kinds: "dit", "vae", "umt5", "vlm" (a Qwen2.5-VL folder or single file) and
"vlm_adapter" (the Uniworld-OSP2.0 encoder adapter).

The kind is decided from the tensors (see detect.py). Models are built on the
meta device and receive the file's tensors one at a time, cast as they
arrive, so loading never holds two copies of the weights.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..device import cast_model, storage_dtype
from ..errors import CheckpointError
from ..model.attention import AttentionFn, sdpa_attention
from ..model.config import DIT_PRESETS, infer_dit_config, infer_vae_config
from ..model.dit import WanDiT
from ..model.flashi2v import reset_fourier_embedding
from ..model.vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, WanVAE, _stat
from ..quant.gguf_decode import BLOCKS
from ..quant.layers import FP8_DTYPES, install_fp8_linears, install_gguf_layers
from .containers import (
    COMPANION_SUFFIXES,
    CONTINUATION_KEY,
    WeightFile,
    carried_metadata,
    in_memory,
    naming_the_file,
    open_weights,
)
from .detect import Identified, identify
from .umt5 import SPIECE_KEY, build_umt5, load_umt5_tokenizer, spiece_tokenizer
from .vlm import adapter_from, load_vlm

# What each loader accepts, and why the look-alikes are refused.
ACCEPTS = {"dit": ("flashi2v_dit", "wan_t2v_dit"), "vae": ("wan21_vae",), "umt5": ("umt5",),
           "vlm_adapter": ("vlm_adapter",)}
REFUSALS = {
    "wan_i2v_dit": "Wan2.1 I2V concatenates the image latents to the input (36 channels) and uses CLIP "
                   "image features; FlashI2V/Uniworld-OSP2.0 shifts latents instead, so its DiT has 16 "
                   "input channels. Use a FlashI2V or Uniworld-OSP2.0 DiT file.",
    "wan22_dit": "Wan2.2 TI2V DiTs take 48-channel latents of the Wan2.2 VAE; this pack runs the "
                 "Wan2.1-based FlashI2V model. Use a FlashI2V or Uniworld-OSP2.0 DiT file.",
    "wan22_vae": "the Wan2.2 VAE has 48 latent channels; FlashI2V/Uniworld-OSP2.0 uses the Wan2.1 VAE "
                 "(16 channels, e.g. wan_2.1_vae.safetensors).",
    "lora": "a LoRA only holds low-rank updates, not a whole model; load a base model and apply the "
            "LoRA on top of it.",
}
DROPPED_KEYS = ("scaled_fp8",)  # markers of ComfyUI's scaled-fp8 files


@dataclass
class Loaded:
    """A model ready to run, with a one-line description and any warnings."""

    model: nn.Module
    kind: str
    description: str
    warnings: list[str] = field(default_factory=list)
    processor: object | None = None  # a text encoder's tokenizer / processor, when it has one


def _check_gguf(wf: WeightFile) -> None:
    arch = wf.metadata.get("general.architecture")
    if wf.format == "gguf" and arch != "wan":
        raise CheckpointError(f"'{wf.path.name}' is a GGUF of architecture '{arch}'",
                              "a GGUF with general.architecture 'wan' (a Wan2.1 / FlashI2V DiT)",
                              "Use a GGUF converted from a FlashI2V or Uniworld-OSP2.0 DiT.")
    if wf.format == "gguf" and "patch_embedding.weight" not in wf.infos and any(
            k.startswith("blocks.") for k in wf.infos):
        raise CheckpointError(f"'{wf.path.name}' without its 5-D patch embedding",
                              "the patch embedding inside the GGUF or in a companion file "
                              f"({', '.join(wf.path.stem + s for s in COMPANION_SUFFIXES)})",
                              "Put the companion .safetensors file next to the GGUF file.")


def _check_kind(ident: Identified, expect: str | None, path: Path) -> None:
    if ident.kind == "vlm_adapter" and expect is None:
        raise CheckpointError(f"'{path.name}' is a {ident.kind_name}", _expected(expect),
                              "An adapter is loaded together with its Qwen2.5-VL model, by the VLM "
                              "loader, not on its own.")
    if ident.kind in REFUSALS:
        raise CheckpointError(f"'{path.name}' is a {ident.kind_name}", _expected(expect),
                              REFUSALS[ident.kind])
    if ident.kind == "unknown":
        raise CheckpointError(f"'{path.name}' holds {len(ident.names)} tensors of no known model "
                              f"(e.g. {sorted(ident.names)[:3]})", _expected(expect),
                              "Check that this is a DiT, VAE or text-encoder file.")
    if expect is not None and ident.kind not in ACCEPTS[expect]:
        raise CheckpointError(f"'{path.name}' is a {ident.kind_name}", _expected(expect),
                              "Pick the file in the matching loader.")


def _expected(expect: str | None) -> str:
    return {"dit": "a FlashI2V / Wan2.1 T2V DiT", "vae": "a Wan2.1 VAE", "umt5": "a umT5 encoder",
            "vlm_adapter": "a Uniworld-OSP2.0 encoder adapter (fc1/fc2)",
            None: "a FlashI2V DiT, Wan2.1 VAE or umT5 encoder"}[expect]


def _dense(wf: WeightFile, ident: Identified, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A tensor in `dtype` (GGUF blocks and fp8 dequantised)."""
    return wf.dense(ident.names[name], dtype)


def _stream_state(wf: WeightFile, ident: Identified, model: nn.Module, dtype: torch.dtype,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """Official name -> tensor, cast per tensor under the dtype policy; fp8 linears stay fp8."""
    wanted = set(model.state_dict())
    state = {}
    for name in ident.names:
        if name not in wanted:
            continue  # reported by the strict check below (scale keys of dense layers are dropped)
        info = wf.infos[ident.names[name]]
        quantized_storage = info.dtype in FP8_DTYPES or info.ggml_type is not None
        if quantized_storage and name.endswith(".weight") and _is_quantized_layer(model, name):
            state[name] = wf.get(ident.names[name]).to(device)
        else:
            target = torch.float32 if name.endswith("scale_weight") else storage_dtype(name, info.dtype, dtype)
            state[name] = _dense(wf, ident, name, target).to(device)
    return state


def _is_quantized_layer(model: nn.Module, weight_name: str) -> bool:
    return hasattr(model.get_submodule(weight_name.rsplit(".", 1)[0]), "dequantize")


def _assign(model: nn.Module, state: dict[str, torch.Tensor], ident: Identified, what: str,
            allowed_missing: tuple[str, ...] = ()) -> None:
    expected = model.state_dict()
    wrong = [f"{k} is {tuple(v.shape)} in the file but {tuple(expected[k].shape)} in the model"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape
             and expected[k].dtype != torch.uint8]  # GGUF layers take their bytes as stored
    if wrong:
        raise CheckpointError(f"tensor sizes that disagree with each other: {'; '.join(wrong[:3])}",
                              f"every tensor of one {what}",
                              "The file may be merged from different models, or corrupt.")
    raw = [k for k in state if k in expected and expected[k].dtype == torch.uint8]
    for name in raw:  # GGUF bytes: load_state_dict would insist on the dense shape
        module_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, nn.Parameter(state.pop(name), requires_grad=False))
    result = model.load_state_dict(state, strict=False, assign=True)
    names = set(model.state_dict())
    unexpected = [k for k in ident.names if k not in names
                  and not k.endswith((".scale_weight", ".scale_input")) and k not in DROPPED_KEYS]
    missing = [k for k in result.missing_keys if k not in raw
               and not k.startswith(allowed_missing) and not k.endswith(".scale_weight")]
    if missing or unexpected:
        raise CheckpointError(f"the {what} weights do not fit the model inferred from their shapes: "
                              f"missing {missing[:4]}, unexpected {unexpected[:4]}",
                              f"a complete {what} state dict",
                              "The file may be truncated, merged or from another model.")


def _materialize_rest(model: nn.Module, device: torch.device) -> None:
    """fp8 files without per-tensor scales: their scale is 1."""
    for module in model.modules():
        scale = module._buffers.get("scale_weight")
        if scale is not None and scale.is_meta:
            module._buffers["scale_weight"] = torch.ones((), device=device)


def _init_flashi2v_modules(model: WanDiT, device: torch.device) -> None:
    """A T2V file has no FlashI2V modules: create them zero-initialised at the output."""
    model.fourier_embedding.to_empty(device=device)
    reset_fourier_embedding(model.fourier_embedding)
    model.learnable_proj.to_empty(device=device)
    model.learnable_proj.reset_parameters()


def _size_name(cfg) -> str:
    same = [n for n, c in DIT_PRESETS.items() if (c.dim, c.num_layers) == (cfg.dim, cfg.num_layers)]
    return same[0] if same else "custom"


def _main_dtype(ident: Identified) -> str:
    """The storage that dominates the file ("bfloat16", "float8_e4m3fn", "GGUF Q4_K", ...)."""
    quantised = {k: v for k, v in ident.dtypes.items() if k in BLOCKS and k not in ("F32", "F16", "BF16")}
    if quantised:
        return "GGUF " + max(quantised, key=quantised.get)
    if any(k in BLOCKS for k in ident.dtypes):
        return "GGUF " + max((k for k in ident.dtypes if k in BLOCKS), key=ident.dtypes.get)
    return max(ident.dtypes, key=ident.dtypes.get) if ident.dtypes else "?"


def _infer(fn, *args, **kwargs):
    """Config inference on shapes from a possibly corrupt file: any failure is a CheckpointError."""
    try:
        return fn(*args, **kwargs)
    except CheckpointError:
        raise
    except (ValueError, KeyError, IndexError, ZeroDivisionError, RuntimeError) as exc:
        raise CheckpointError(f"tensor shapes that do not form a consistent model ({exc})",
                              "the shapes of a Wan2.1 / FlashI2V model",
                              "The file may be corrupt or from another model.") from exc


def _declared(wf: WeightFile, key: str) -> dict:
    """Config hints stored in a safetensors header (what `convert` writes)."""
    try:
        value = json.loads(wf.metadata.get(key, "{}"))
    except (TypeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _load_dit(wf: WeightFile, ident: Identified, device: torch.device, dtype: torch.dtype,
              attention: AttentionFn, num_heads: int | None = None) -> Loaded:
    declared = _declared(wf, "dit_config")
    cfg = _infer(infer_dit_config, ident.shapes(wf), num_heads=num_heads or declared.get("num_heads"),
                 text_len=declared.get("text_len"))
    cfg = replace(cfg, flashi2v=True)
    # Wan2.1's latents have 16 channels; a miniature's VAE may have fewer, and the sampler checks the pair
    if cfg.in_dim != cfg.out_dim or cfg.num_layers < 1 or cfg.dim < 1:
        raise CheckpointError(f"a DiT reading {cfg.in_dim} latent channels, predicting {cfg.out_dim}, with "
                              f"{cfg.num_layers} blocks", "a Wan2.1-based DiT that predicts the latent channels "
                              "it reads (Wan2.1: 16)")
    with torch.device("meta"):
        model = WanDiT(cfg, attention)
    fp8 = {n for n, s in ident.names.items() if wf.infos[s].dtype in FP8_DTYPES}
    install_fp8_linears(model, fp8, dtype)
    install_gguf_layers(model, {n: wf.infos[s].ggml_type for n, s in ident.names.items()
                                if wf.infos[s].ggml_type is not None}, dtype)
    state = _stream_state(wf, ident, model, dtype, device)
    notes = []
    if ident.kind == "wan_t2v_dit":
        _assign(model, state, ident, "DiT", ("fourier_embedding.", "learnable_proj."))
        _init_flashi2v_modules(model, device)
        notes.append("plain Wan2.1 T2V weights: the FlashI2V modules were created zero-initialised, "
                     "so this is a base model for FlashI2V training, not an image-to-video model")
        warnings.warn(notes[-1], stacklevel=3)
    else:
        _assign(model, state, ident, "DiT")
    _materialize_rest(model, device)
    model = cast_model(model.eval(), dtype, device)
    description = (f"{ident.kind_name}, {_size_name(cfg)} config ({cfg.num_layers} layers, dim "
                   f"{cfg.dim}), {_main_dtype(ident)}, {ident.layout} keys")
    return Loaded(model, ident.kind, description, notes)


def _latent_stat(wf: WeightFile, key: str, default: list[float], z_dim: int) -> list[float]:
    """Per-channel latent statistics from the file's metadata (z_dim numbers), else `default`."""
    if key not in wf.metadata:
        if len(default) != z_dim:  # Wan2.1's constants are for its 16 channels only
            raise CheckpointError(f"'{wf.path.name}': a VAE with {z_dim} latent channels and no '{key}' metadata",
                                  f"'{key}' in the metadata ({z_dim} numbers), or a 16-channel Wan2.1 VAE",
                                  "Export it with training.vae_train.save_vae, which measures and stores them.")
        return default
    try:
        values = [float(v) for v in json.loads(wf.metadata[key])]
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"'{wf.path.name}' with '{key}' metadata that is not a list of numbers",
                              f"{z_dim} numbers as JSON", "Re-export the VAE, or remove the entry.") from exc
    if len(values) != z_dim:
        raise CheckpointError(f"'{wf.path.name}' with {len(values)} '{key}' values", f"{z_dim}, one per latent channel")
    return values


def _load_vae(wf: WeightFile, ident: Identified, device: torch.device, dtype: torch.dtype,
              attention: AttentionFn, num_heads: int | None = None) -> Loaded:
    cfg = _infer(infer_vae_config, ident.shapes(wf))
    with torch.device("meta"):
        model = WanVAE(cfg)
    _assign(model, _stream_state(wf, ident, model, dtype, device), ident, "VAE")
    # a retrained VAE carries its own latent statistics in the metadata; else Wan2.1's public ones
    mean = _latent_stat(wf, "latents_mean", WAN21_LATENTS_MEAN, cfg.z_dim)
    std = _latent_stat(wf, "latents_std", WAN21_LATENTS_STD, cfg.z_dim)
    model.register_buffer("latents_mean", _stat(mean).to(device), persistent=False)
    model.register_buffer("latents_std", _stat(std).to(device), persistent=False)
    model = cast_model(model.eval(), dtype, device)
    return Loaded(model, ident.kind, f"{ident.kind_name} (base width {cfg.base_dim}), "
                  f"{_main_dtype(ident)}, {ident.layout} keys")


def _load_umt5(wf: WeightFile, ident: Identified, device: torch.device, dtype: torch.dtype,
               attention: AttentionFn, num_heads: int | None = None) -> Loaded:
    state = {name: _dense(wf, ident, name, dtype) for name in ident.names
             if not name.endswith((".scale_weight", ".scale_input")) and name not in (*DROPPED_KEYS, SPIECE_KEY)}
    model = _infer(build_umt5, state, device, dtype)
    cfg = model.config
    tokenizer = spiece_tokenizer(wf.get(ident.names[SPIECE_KEY])) if SPIECE_KEY in ident.names else None
    return Loaded(model, ident.kind, f"{ident.kind_name} ({cfg.num_layers} layers, dim {cfg.d_model}), "
                  f"{_main_dtype(ident)}, {ident.layout} keys{', with its tokenizer' if tokenizer else ''}",
                  processor=tokenizer)


def _load_adapter(wf: WeightFile, ident: Identified, device: torch.device, dtype: torch.dtype,
                  attention: AttentionFn, num_heads: int | None = None) -> Loaded:
    adapter = adapter_from(wf, ident, torch.float32).to(device)  # small: kept in float32
    return Loaded(adapter, ident.kind, f"{ident.kind_name} ({adapter.fc1.in_features} -> "
                  f"{adapter.fc2.out_features}), {_main_dtype(ident)}")


LOADERS = {"dit": _load_dit, "vae": _load_vae, "umt5": _load_umt5, "vlm_adapter": _load_adapter}
KIND_LOADER = {kind: loader for loader, kinds in ACCEPTS.items() for kind in kinds}


def load(path: str | Path, expect: str | None = None, device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32, attention: AttentionFn = sdpa_attention,
         num_heads: int | None = None, tokenizer: str | Path | None = None) -> Loaded:
    """Load any supported model file; `expect` ('dit', 'vae', 'umt5', 'vlm', 'vlm_adapter') refuses other kinds.

    `num_heads` is only needed for DiTs whose width is not a multiple of Wan's
    128-wide heads and whose file does not declare a `dit_config`. `tokenizer`
    is a folder of tokenizer files for a text encoder given as a single file
    (a folder model brings its own); the result's `processor` holds it.
    """
    with naming_the_file(path):
        if expect == "vlm":
            return _load_vlm(Path(path), torch.device(device), dtype, tokenizer)
        wf = open_weights(path)
        _check_gguf(wf)
        ident = identify(wf)
        _check_kind(ident, expect, wf.path)
        loader = LOADERS[KIND_LOADER[ident.kind]]
        loaded = loader(wf, ident, torch.device(device), dtype, attention, num_heads)
        if ident.kind == "umt5":  # a given folder wins over the file's own tokenizer
            folder = tokenizer or (Path(path) if Path(path).is_dir() and loaded.processor is None else None)
            if folder is not None:
                loaded.processor = load_umt5_tokenizer(folder)
        return loaded


def _load_vlm(source: Path, device: torch.device, dtype: torch.dtype, tokenizer: str | Path | None) -> Loaded:
    model, processor = load_vlm(source, dtype, tokenizer)
    text = model.config.text_config
    return Loaded(model.to(device), "vlm", f"Qwen2.5-VL ({text.num_hidden_layers} layers, hidden "
                  f"{text.hidden_size}{', no vision tower' if model.model.visual is None else ''})",
                  processor=processor)




def trained_for_continuation(path: str | Path) -> bool:
    """Whether a DiT file says it was trained to continue videos from context frames (header only)."""
    with naming_the_file(path):
        return str(open_weights(path).metadata.get(CONTINUATION_KEY, "")).lower() in ("1", "true", "yes")


def peek_config(path: str | Path, expect: str):
    """The DiTConfig / VAEConfig of a 'dit' or 'vae' file from its header alone (no tensor is read).

    Refuses a file of another kind with the loader's own message, so a wrong
    file is caught before anything heavy runs.
    """
    wf = open_weights(path)
    _check_gguf(wf)
    ident = identify(wf)
    _check_kind(ident, expect, wf.path)
    if expect == "vae":
        return _infer(infer_vae_config, ident.shapes(wf))
    declared = _declared(wf, "dit_config")
    return _infer(infer_dit_config, ident.shapes(wf), num_heads=declared.get("num_heads"),
                  text_len=declared.get("text_len"))


def load_dit(path: str | Path, device: torch.device | str, dtype: torch.dtype,
             attention: AttentionFn = sdpa_attention) -> WanDiT:
    """Load a DiT file (official, ComfyUI or diffusers keys; fp32/bf16/fp16/fp8)."""
    return load(path, "dit", device, dtype, attention).model


def load_vae(path: str | Path, device: torch.device | str, dtype: torch.dtype) -> WanVAE:
    """Load a Wan2.1 VAE file (official or diffusers keys)."""
    return load(path, "vae", device, dtype).model


def official_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an in-memory state dict of any supported layout to official keys."""
    wf = in_memory(state)
    ident = identify(wf)
    return {name: wf.get(src) for name, src in ident.names.items()}


def shape_problems(wf: WeightFile, ident: Identified, model: nn.Module) -> list[str]:
    """Tensors whose shape disagrees with the model the file's other tensors describe, by name."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return [f"{name} is {wf.infos[src].shape}, expected {expected[name]}" for name, src in ident.names.items()
            if name in expected and tuple(wf.infos[src].shape) != expected[name]]


def inspect_file(path: str | Path) -> dict:
    """What a file is: format, kind, layout, config, dtypes, size, and what would stop it loading.

    `problems` lists missing tensors and tensors whose shape disagrees with the
    rest of the file (the config is inferred from the tensors that agree).
    """
    with naming_the_file(path):
        return _inspect(path)


def _inspect(path: str | Path) -> dict:
    wf = open_weights(path)
    ident = identify(wf)
    report = {"file": str(wf.path), "format": wf.format, "kind": ident.kind_name,
              "layout": ident.layout, "tensors": len(wf.infos), "parameters": wf.num_params,
              "bytes": wf.nbytes, "dtypes": ident.dtypes, "notes": ident.notes}
    if ident.kind in REFUSALS:
        report["refused"] = REFUSALS[ident.kind]
    elif ident.kind in ("flashi2v_dit", "wan_t2v_dit", "wan21_vae"):
        dit = ident.kind != "wan21_vae"
        cfg = _infer(infer_dit_config if dit else infer_vae_config, ident.shapes(wf))
        with torch.device("meta"):
            model = WanDiT(replace(cfg, flashi2v=True)) if dit else WanVAE(cfg)
        expected, present = set(model.state_dict()), set(ident.names)
        report["config"] = cfg.__dict__
        report["missing_keys"] = sorted(expected - present)
        if ident.kind == "wan_t2v_dit":  # a T2V base: the FlashI2V modules are created, not missing
            report["missing_keys"] = [k for k in report["missing_keys"]
                                      if not k.startswith(("fourier_embedding.", "learnable_proj."))]
        report["unexpected_keys"] = sorted(k for k in present - expected
                                           if not k.endswith(("scale_weight", "scale_input")))
        report["problems"] = shape_problems(wf, ident, model) + [f"missing {k}" for k in report["missing_keys"]]
    return report


def check_rewritable(path: str | Path, out: str | Path) -> None:
    """Before writing a file from `path`: it is a consistent model, and `out` is not the input itself."""
    report = inspect_file(path)
    if report.get("problems"):
        raise CheckpointError(f"'{Path(report['file']).name}' has tensors that do not fit together: "
                              f"{'; '.join(report['problems'][:3])}", "a complete, consistent model to rewrite",
                              "Re-download the file; `python -m uniworld_core inspect` lists every problem.")
    if Path(out).resolve() == Path(report["file"]).resolve():
        raise CheckpointError(f"the output '{out}' is the input file", "a different output path",
                              "Write the new file under another name; the original stays as it is.")


def convert_file(path: str | Path, out: str | Path, dtype: torch.dtype,
                 num_heads: int | None = None) -> Path:
    """Write a DiT or VAE file as one safetensors file in official key layout and `dtype`."""
    wf = open_weights(path)
    ident = identify(wf)
    _check_kind(ident, None, wf.path)
    if ident.kind not in ("flashi2v_dit", "wan_t2v_dit", "wan21_vae"):
        raise CheckpointError(f"'{wf.path.name}' is a {ident.kind_name}", "a DiT or VAE file to convert")
    check_rewritable(path, out)
    metadata = {"format": "pt", "uniworld_kind": ident.kind, **carried_metadata(wf)}
    if ident.kind != "wan21_vae":
        declared = _declared(wf, "dit_config")
        cfg = _infer(infer_dit_config, ident.shapes(wf), num_heads=num_heads or declared.get("num_heads"),
                     text_len=declared.get("text_len"))
        metadata["dit_config"] = cfg.to_json()
    tensors = {name: _dense(wf, ident, name, dtype).contiguous() for name in ident.names
               if not name.endswith((".scale_weight", ".scale_input")) and name not in DROPPED_KEYS}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)
    return out
