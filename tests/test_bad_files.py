"""Wrong, broken and hostile files: a specific CheckpointError, never a crash, never code run."""

from __future__ import annotations

import json
import os
import random
import time

import pytest
import torch
from safetensors.torch import save_file
from test_loading import CFG, save_sharded, tiny_dit, tiny_vae

from uniworld_core.errors import CheckpointError
from uniworld_core.model.config import VAEConfig
from uniworld_core.model.vae import WanVAE
from uniworld_core.weights.registry import load


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_pickled_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "code-was-executed"
    state = tiny_dit().state_dict()
    state["evil"] = _Payload(marker)
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="Python objects that loading would have to execute"):
        load(tmp_path / "model.pt", "dit")
    assert not marker.exists()


@pytest.fixture
def dit_file(tmp_path):
    path = tmp_path / "dit.safetensors"
    save_file(tiny_dit().state_dict(), str(path))
    return path


def test_truncated_safetensors(dit_file):
    data = dit_file.read_bytes()
    dit_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is truncated"):
        load(dit_file, "dit")


def test_truncated_pt(tmp_path):
    path = tmp_path / "dit.pt"
    torch.save(tiny_dit().state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="could not be read as a PyTorch file"):
        load(path, "dit")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load(path, "dit")


def test_text_file_renamed_safetensors(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are my prompt notes, not a model\n" * 20)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load(path, "dit")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no file at"):
        load(tmp_path / "nope.safetensors", "dit")


def test_vae_given_to_dit_loader(tmp_path):
    save_file(tiny_vae().state_dict(), str(tmp_path / "vae.safetensors"))
    with pytest.raises(CheckpointError, match="is a Wan2.1 VAE; expected a FlashI2V / Wan2.1 T2V DiT"):
        load(tmp_path / "vae.safetensors", "dit")


def test_dit_given_to_vae_loader(dit_file):
    with pytest.raises(CheckpointError, match="is a FlashI2V DiT; expected a Wan2.1 VAE"):
        load(dit_file, "vae")


def test_lora_file(tmp_path):
    lora = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 128),
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(128, 4)}
    save_file(lora, str(tmp_path / "style.safetensors"))
    with pytest.raises(CheckpointError, match="is a LoRA.*apply the LoRA on top"):
        load(tmp_path / "style.safetensors", "dit")


def test_wan_i2v_dit_refused(tmp_path):
    state = tiny_dit().state_dict()
    state["patch_embedding.weight"] = torch.zeros(CFG.dim, 36, 1, 2, 2)
    save_file(state, str(tmp_path / "wan_i2v.safetensors"))
    with pytest.raises(CheckpointError, match="Wan2.1 I2V DiT.*36 channels"):
        load(tmp_path / "wan_i2v.safetensors", "dit")


def test_wan22_vae_refused(tmp_path):
    state = WanVAE(VAEConfig(base_dim=8, z_dim=48)).state_dict()
    save_file(state, str(tmp_path / "wan2.2_vae.safetensors"))
    with pytest.raises(CheckpointError, match="Wan2.2 VAE.*48 latent channels"):
        load(tmp_path / "wan2.2_vae.safetensors", "vae")


def test_mismatched_sizes(tmp_path):
    state = tiny_dit().state_dict()
    state["blocks.1.ffn.0.weight"] = torch.zeros(96, CFG.dim)  # a block from another model
    save_file(state, str(tmp_path / "merged.safetensors"))
    with pytest.raises(CheckpointError, match=r"blocks.1.ffn.0.weight is \(96, 128\) in the file"):
        load(tmp_path / "merged.safetensors", "dit")


def test_missing_tensor(tmp_path):
    state = tiny_dit().state_dict()
    del state["blocks.1.cross_attn.o.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \['blocks.1.cross_attn.o.weight'\]"):
        load(tmp_path / "partial.safetensors", "dit")


def test_missing_shard(tmp_path):
    save_sharded(tiny_dit().state_dict(), tmp_path, shards=3)
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match="names the shard 'model-00002-of-00003.safetensors'"):
        load(tmp_path / "model.safetensors.index.json", "dit")


def test_unknown_tensors(tmp_path):
    save_file({"foo.weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="of no known model"):
        load(tmp_path / "other.safetensors")


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    header_end = 8 + int.from_bytes(data[:8], "little")
    for _ in range(rng.randint(1, 8)):
        # half the hits land in the header, where corruption changes meaning, not just values
        pos = rng.randrange(header_end) if rng.random() < 0.5 else rng.randrange(len(data))
        data[pos] = rng.randrange(256)
    if rng.random() < 0.1:
        data = data[: rng.randrange(len(data))]
    return bytes(data)


def test_fuzz_corrupted_files_load_or_fail_cleanly(tmp_path):
    """200 corrupted copies of a DiT and a VAE: each loads, or raises CheckpointError, quickly."""
    rng = random.Random(1234)
    sources = {}
    for name, model in (("dit", tiny_dit()), ("vae", tiny_vae())):
        path = tmp_path / f"{name}.safetensors"
        save_file(model.state_dict(), str(path))
        sources[name] = path.read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(200):
        kind = "dit" if i % 2 == 0 else "vae"
        path = tmp_path / f"fuzz_{i}.safetensors"
        path.write_bytes(_corrupt(sources[kind], rng))
        started = time.perf_counter()
        try:
            load(path, kind)
            outcomes["loaded"] += 1
        except CheckpointError:
            outcomes["refused"] += 1
        assert time.perf_counter() - started < 10, f"case {i} took too long"
        path.unlink()
    assert outcomes["loaded"] + outcomes["refused"] == 200
    assert outcomes["refused"] > 20, outcomes  # header hits must be caught, not loaded


def test_index_json_that_is_not_an_index(tmp_path):
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a safetensors index"):
        load(path, "dit")


# ---- messages name the format the user gave, and what the bytes are instead

def test_random_bytes_named_gguf_are_not_called_safetensors(tmp_path):
    path = tmp_path / "model_Q4_K.gguf"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                         dtype=torch.uint8).tolist()))
    with pytest.raises(CheckpointError, match=r"'model_Q4_K.gguf' is not a GGUF file: it is unrecognised data"):
        load(path, "dit")


def test_a_pickle_named_safetensors_names_both_formats(tmp_path):
    import pickle

    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"weight": object()}, protocol=4))
    with pytest.raises(CheckpointError, match=r"'model.safetensors' is not a safetensors file: it holds PyTorch "
                                              r"data, which contains Python objects"):
        load(path, "dit")


def test_a_download_error_page_is_recognised(tmp_path):
    path = tmp_path / "wan_2.1_vae.safetensors"
    path.write_text("<!DOCTYPE html><html><body>Access denied</body></html>")
    with pytest.raises(CheckpointError, match="not a safetensors file: it is an HTML/XML page"):
        load(path, "vae")


def test_fp8_files_read_the_same_in_comfyui(tmp_path):
    """ComfyUI builds every Linear of a `scaled_fp8` file in fp8 and reads a missing scale as 1.0.

    Read our file that way (its rule, done here by hand) and by our loader: the same weights, close to
    the original. bench/comfyui_fp8_read.py does the same in a real ComfyUI (docs/quantization.md)."""
    from safetensors.torch import load_file

    from uniworld_core import quantize_file

    source = tiny_dit()
    save_file({k: v.to(torch.bfloat16) for k, v in source.state_dict().items()}, str(tmp_path / "bf16.safetensors"))
    stored = load_file(str(quantize_file(tmp_path / "bf16.safetensors", tmp_path / "fp8.safetensors", "fp8_e4m3fn")))
    assert "scaled_fp8" in stored
    ours = load(tmp_path / "fp8.safetensors", "dit").model
    for name, module in source.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        as_comfyui = stored[name + ".weight"].to(torch.float8_e4m3fn).float() * stored.get(
            name + ".scale_weight", torch.ones(())).float()
        mine = ours.get_submodule(name)
        mine = mine.dequantize(torch.float32) if hasattr(mine, "dequantize") else mine.weight.float()
        assert torch.equal(as_comfyui, mine), name
        original = module.weight.to(torch.bfloat16).float()
        assert ((as_comfyui - original).norm() / original.norm()).item() < 0.04, name


def test_dit_predicting_other_channels_than_it_reads_refused(tmp_path):
    state = tiny_dit().state_dict()
    state["head.head.weight"] = torch.zeros(8 * 4, CFG.dim)  # 8 channels out of 2x2 patches, 16 in
    state["head.head.bias"] = torch.zeros(8 * 4)
    save_file(state, str(tmp_path / "odd_head.safetensors"))
    with pytest.raises(CheckpointError, match="reading 16 latent channels, predicting 8.*predicts the latent"):
        load(tmp_path / "odd_head.safetensors", "dit")
