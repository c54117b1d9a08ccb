"""GGUF: every block type matches gguf's own dequantiser; GGUF DiTs load, stay quantised and run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_loading import dit_inputs, tiny_dit

gguf = pytest.importorskip("gguf")

from gguf import GGMLQuantizationType as T  # noqa: E402

from uniworld_core.errors import CheckpointError  # noqa: E402
from uniworld_core.model.config import DiTConfig  # noqa: E402
from uniworld_core.quant.gguf_decode import BLOCKS, dequantize  # noqa: E402
from uniworld_core.quant.gguf_encode import OUR_QUANTIZERS, quantize  # noqa: E402
from uniworld_core.quant.layers import GGUFLinear  # noqa: E402
from uniworld_core.weights.containers import ORIG_SHAPE_KEY  # noqa: E402
from uniworld_core.weights.lora import applied, read_lora  # noqa: E402
from uniworld_core.weights.quantize import quantize_file  # noqa: E402
from uniworld_core.weights.registry import load  # noqa: E402

GGUF_QUANTISES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "F16", "BF16")
HALF_FIELDS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q2_K": [80, 82],
               "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
# 256-wide so that the K-quant types apply to the block matrices
K_CFG = DiTConfig(dim=256, ffn_dim=256, num_heads=2, num_layers=1, freq_dim=32, text_dim=20)


def _raw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8))


@pytest.mark.parametrize("name", list(BLOCKS))
def test_every_type_matches_the_gguf_dequantiser_exactly(name):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((8, 512)) * np.linspace(0.05, 4, 512)).astype(np.float32)
    if name in GGUF_QUANTISES or name == "F32":
        raw = gguf.quants.quantize(x, T[name])
    elif name in OUR_QUANTIZERS:
        raw = quantize(torch.from_numpy(x), name)
    else:  # no quantiser anywhere: random blocks with sane fp16 scales
        block_bytes = BLOCKS[name][1]
        raw = rng.integers(0, 256, size=(8, 2 * block_bytes), dtype=np.uint8)
        for start in HALF_FIELDS[name]:
            view = raw.reshape(-1, block_bytes)
            view[:, start:start + 2] = rng.uniform(-1, 1, (len(view), 1)).astype(np.float16).view(np.uint8)
    expected = gguf.quants.dequantize(raw, T[name])
    ours = dequantize(_raw(raw), name, expected.shape, torch.float32).numpy()
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize("name,bound", [("Q4_K", 0.1), ("Q5_K", 0.05), ("Q6_K", 0.025)])
def test_our_k_quantisers_round_trip(name, bound):
    x = torch.randn(16, 1024) * torch.linspace(0.1, 3, 1024)
    back = gguf.quants.dequantize(quantize(x, name), T[name])
    assert np.sqrt(((back - x.numpy()) ** 2).mean()) / x.std().item() < bound


@pytest.fixture(scope="module")
def k_dit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    model = tiny_dit(cfg=K_CFG)
    save_file(model.state_dict(), str(folder / "dit.safetensors"))
    return model, folder


def _out(model):
    with torch.no_grad():
        return model(*dit_inputs(model.cfg))


@pytest.mark.parametrize("name", ["Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q4_K", "Q4_0"])
def test_gguf_dit_loads_quantised_and_runs(k_dit, name):
    model, folder = k_dit
    path = quantize_file(folder / "dit.safetensors", folder / f"dit_{name}.gguf", name)
    loaded = load(path, "dit")
    assert loaded.description.endswith(f"GGUF {name}, official keys")
    q = loaded.model.blocks[0].self_attn.q
    assert isinstance(q, GGUFLinear) and q.weight.dtype == torch.uint8, "blocks must stay quantised"
    assert q.weight.numel() == (K_CFG.dim * K_CFG.dim // BLOCKS[name][0]) * BLOCKS[name][1]
    # equal to the dense model holding exactly the dequantised weights
    dense = tiny_dit(cfg=K_CFG)
    dense.load_state_dict({k: (loaded.model.get_submodule(k.rsplit(".", 1)[0]).dequantize(torch.float32)
                               if isinstance(loaded.model.get_submodule(k.rsplit(".", 1)[0]), GGUFLinear)
                               and k.endswith("weight") else v) for k, v in loaded.model.state_dict().items()})
    assert torch.allclose(_out(loaded.model), _out(dense), atol=1e-5, rtol=1e-5)


def test_q8_0_is_close_to_the_float_model(k_dit):
    model, folder = k_dit
    loaded = load(quantize_file(folder / "dit.safetensors", folder / "q8.gguf", "Q8_0"), "dit")
    full = _out(model)
    error = ((_out(loaded.model) - full).abs().max() / full.abs().max()).item()
    assert error < 0.01, f"Q8_0 relative error {error:.4f}"


def test_patch_embedding_in_a_companion_file(k_dit, tmp_path):
    model, folder = k_dit
    source = quantize_file(folder / "dit.safetensors", tmp_path / "dit.gguf", "Q8_0")
    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(tmp_path / "split.gguf"), "wan")
    for key, field in reader.fields.items():  # keep the shapes of the other 5-D tensors
        if key.startswith(ORIG_SHAPE_KEY) and not key.endswith("patch_embedding.weight"):
            writer.add_array(key, [int(field.parts[i][0]) for i in field.data])
    for tensor in reader.tensors:
        if tensor.name != "patch_embedding.weight":
            writer.add_tensor(tensor.name, np.asarray(tensor.data), raw_shape=np.asarray(tensor.data).shape,
                              raw_dtype=tensor.tensor_type)
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        step()
    writer.close()
    with pytest.raises(CheckpointError, match="without its 5-D patch embedding.*split.patch_embedding.safetensors"):
        load(tmp_path / "split.gguf", "dit")
    save_file({"patch_embedding.weight": model.state_dict()["patch_embedding.weight"]},
              str(tmp_path / "split.patch_embedding.safetensors"))
    loaded = load(tmp_path / "split.gguf", "dit")
    assert torch.equal(loaded.model.patch_embedding.weight, model.patch_embedding.weight)


def test_gguf_of_another_architecture(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "llama.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        step()
    writer.close()
    with pytest.raises(CheckpointError, match="GGUF of architecture 'llama'"):
        load(tmp_path / "llama.gguf", "dit")


def test_unsupported_gguf_type(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "iq.gguf"), "wan")
    raw = np.zeros((4, 144), np.uint8)  # 4 rows of 8 IQ4_NL blocks (18 bytes each)
    writer.add_tensor("blocks.0.ffn.0.weight", raw, raw_shape=raw.shape, raw_dtype=T.IQ4_NL)
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        step()
    writer.close()
    with pytest.raises(CheckpointError, match="as GGUF type IQ4_NL"):
        load(tmp_path / "iq.gguf", "dit")


def test_lora_on_a_gguf_base_equals_lora_on_its_dequantised_weights(k_dit, tmp_path):
    model, folder = k_dit
    loaded = load(quantize_file(folder / "dit.safetensors", tmp_path / "q4.gguf", "Q4_K"), "dit").model
    gen = torch.Generator().manual_seed(3)
    name = "blocks.0.ffn.0"
    save_file({f"diffusion_model.{name}.lora_A.weight": torch.randn(4, K_CFG.dim, generator=gen) * 0.1,
               f"diffusion_model.{name}.lora_B.weight": torch.randn(K_CFG.ffn_dim, 4, generator=gen) * 0.1},
              str(tmp_path / "lora.safetensors"))
    patches = read_lora(tmp_path / "lora.safetensors", loaded, 1.0)
    layer = loaded.get_submodule(name)
    x = torch.randn(3, K_CFG.dim)
    with torch.no_grad(), applied(loaded, patches):
        patched = layer(x)
    merged = layer.dequantize(torch.float32) + patches[name][0].delta(torch.float32, x.device)
    assert torch.allclose(patched, x @ merged.T + layer.bias, atol=1e-5, rtol=1e-5)
    assert layer.weight.dtype == torch.uint8  # the stored blocks were not touched
