"""umT5: official Wan T5 weights run in transformers' UMT5EncoderModel, reproducing the reference."""

from __future__ import annotations

import pytest
import torch
from conftest import Reference, reference_files, relative_error
from safetensors.torch import save_file

from uniworld_core.conditioning.umt5_encoder import encode_tokens
from uniworld_core.weights.registry import load
from uniworld_core.weights.umt5 import build_umt5, official_t5_to_hf

TOL = 1e-4
FILES = reference_files("umt5_ref_*.safetensors")


def test_umt5_reference_files_present():
    assert FILES, "no umt5_ref_*.safetensors found in ../shared/reference or $UNIWORLD_REFERENCE_DIR"


@pytest.fixture(scope="module", params=FILES, ids=lambda p: p.name)
def ref(request) -> Reference:
    return Reference(request.param)


def test_reference_context(ref):
    model = build_umt5(ref.with_prefix("t5.weight."))
    cfg = ref.meta["t5_config"]
    assert model.config.num_layers == cfg["num_layers"] and model.config.num_heads == cfg["num_heads"]
    out = encode_tokens(model, ref.tensors["t5.in.ids"], ref.tensors["t5.in.mask"])
    assert relative_error(out, ref.tensors["t5.out.context_padded"]) <= TOL
    # positions past each sequence's length are exactly zero (the official contract)
    lengths = ref.tensors["t5.in.mask"].sum(dim=1)
    for i, n in enumerate(lengths.tolist()):
        assert not out[i, n:].any()


def _saved(ref, tmp_path, layout: str):
    official = ref.with_prefix("t5.weight.")
    if layout == "official-pth":
        path = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
        torch.save(official, path)
        return path
    hf = official_t5_to_hf(official)
    del hf["encoder.embed_tokens.weight"]  # HF files store the tied embedding once
    if layout == "comfyui-fp8-scaled":
        for name in [k for k in hf if k.endswith(".weight") and hf[k].ndim == 2 and "block" in k]:
            scale = hf[name].abs().max() / 448.0
            hf[name] = (hf[name] / scale).to(torch.float8_e4m3fn)
            hf[name.replace(".weight", ".scale_weight")] = scale.reshape(())
        hf["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / "umt5_xxl.safetensors"
    save_file({k: v.contiguous() for k, v in hf.items()}, str(path))
    return path


@pytest.mark.parametrize("layout", ["official-pth", "huggingface", "comfyui-fp8-scaled"])
def test_registry_loads_every_umt5_layout(ref, tmp_path, layout):
    path = _saved(ref, tmp_path, layout)
    loaded = load(path, expect="umt5")
    assert loaded.kind == "umt5"
    ids, mask = ref.tensors["t5.in.ids"], ref.tensors["t5.in.mask"]
    out = encode_tokens(loaded.model, ids, mask)
    if layout != "comfyui-fp8-scaled":
        assert relative_error(out, ref.tensors["t5.out.context_padded"]) <= TOL
        return
    # fp8: equal to the model holding exactly the fp8-rounded weights the file stores
    from safetensors.torch import load_file

    stored = load_file(str(path))
    rounded = {k: v.float() * stored[k.replace(".weight", ".scale_weight")]
               if v.dtype == torch.float8_e4m3fn and k != "scaled_fp8" else v
               for k, v in stored.items() if not k.endswith("scale_weight") and k != "scaled_fp8"}
    expected = encode_tokens(build_umt5(rounded), ids, mask)
    assert relative_error(out, expected) <= 1e-5


def test_context_padded_to_text_len(ref):
    model = build_umt5(ref.with_prefix("t5.weight."))
    ids, mask = ref.tensors["t5.in.ids"], ref.tensors["t5.in.mask"]
    out = encode_tokens(model, ids, mask, text_len=ids.shape[1] + 7)
    assert out.shape[1] == ids.shape[1] + 7 and not out[:, ids.shape[1]:].any()
