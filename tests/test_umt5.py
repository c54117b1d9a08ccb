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
    assert FILES, "no umt5_ref_*.safetensors in tests/reference, ../shared/reference or $UNIWORLD_REFERENCE_DIR"


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


def _sentencepiece_model(vocab_size: int) -> bytes:
    """A small unigram SentencePiece model with umT5's special ids (pad 0, eos 1, unk 2)."""
    import io

    import sentencepiece

    text = ["a red square slides left over the sky", "the girl turns and smiles slowly",
            "watercolor painting of a cat in the rain", "neon city lights at night"] * 40
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model,
                                             vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                             model_type="unigram", minloglevel=2)
    return model.getvalue()


def test_comfyui_umt5_file_brings_its_own_tokenizer(ref, tmp_path):
    """ComfyUI's umt5_xxl_*.safetensors stores the SentencePiece model as a `spiece_model` uint8 tensor and no
    tokenizer folder exists: the file alone must give a working text encoder."""
    import numpy as np
    import sentencepiece
    from safetensors.torch import load_file

    from uniworld_core import umt5_conditioner

    vocab = ref.with_prefix("t5.weight.")["token_embedding.weight"].shape[0]
    proto = _sentencepiece_model(min(vocab, 40))
    path = _saved(ref, tmp_path, "comfyui-fp8-scaled")
    tensors = load_file(str(path))
    tensors["spiece_model"] = torch.from_numpy(np.frombuffer(proto, dtype=np.uint8).copy())
    save_file(tensors, str(path))
    loaded = load(path, expect="umt5")
    assert "with its tokenizer" in loaded.description
    prompt = "a red cat slides over the sky"
    tokens = loaded.processor([prompt], padding="max_length", max_length=40)
    expected_ids = sentencepiece.SentencePieceProcessor(model_proto=proto).encode(prompt) + [1]  # + </s>
    assert tokens["input_ids"][0, :len(expected_ids)].tolist() == expected_ids
    assert tokens["attention_mask"][0].sum() == len(expected_ids)
    assert not tokens["input_ids"][0, len(expected_ids):].any()
    cut = loaded.processor([prompt], max_length=3)["input_ids"][0].tolist()
    assert cut == expected_ids[:2] + [1], "a cut text keeps its </s>"
    # the whole conditioner from the file alone: the prompt's ids through the encoder, zero-padded to 512
    context = umt5_conditioner(path, dtype=torch.float32).encode(None, prompt)[0]
    ids = torch.tensor([expected_ids + [0] * (512 - len(expected_ids))])
    reference = encode_tokens(loaded.model, ids, (torch.arange(512) < len(expected_ids)).long()[None], 512)
    assert context.shape == (1, 512, loaded.model.config.d_model)
    assert torch.allclose(context, reference, atol=1e-6)


def test_a_broken_spiece_model_is_named(ref, tmp_path):
    from safetensors.torch import load_file

    from uniworld_core import CheckpointError

    path = _saved(ref, tmp_path, "huggingface")
    tensors = load_file(str(path))
    tensors["spiece_model"] = torch.arange(64, dtype=torch.uint8)
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="spiece_model.*not a SentencePiece model"):
        load(path, expect="umt5")
