"""`python -m uniworld_core inspect` and `convert`."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_loading import assert_same_model, tiny_dit, tiny_vae

from uniworld_core.__main__ import main
from uniworld_core.errors import CheckpointError
from uniworld_core.weights.registry import load


def test_inspect_reports_kind_config_and_dtypes(tmp_path, capsys):
    path = tmp_path / "dit.safetensors"
    state = tiny_dit().state_dict()
    save_file({f"model.diffusion_model.{k}": v.to(torch.bfloat16) for k, v in state.items()}, str(path))
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "FlashI2V DiT" and report["layout"] == "comfyui"
    assert report["dtypes"] == {"bfloat16": report["tensors"]}
    assert report["config"]["dim"] == 128 and report["config"]["num_layers"] == 2
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []


def test_inspect_names_a_refused_file(tmp_path, capsys):
    state = tiny_dit().state_dict()
    state["patch_embedding.weight"] = torch.zeros(128, 36, 1, 2, 2)
    save_file(state, str(tmp_path / "i2v.safetensors"))
    assert main(["inspect", str(tmp_path / "i2v.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "Wan2.1 I2V DiT" in out and "refused" in out


def test_inspect_lists_missing_keys(tmp_path, capsys):
    state = tiny_dit().state_dict()
    del state["head.modulation"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    main(["inspect", str(tmp_path / "partial.safetensors"), "--json"])
    assert json.loads(capsys.readouterr().out)["missing_keys"] == ["head.modulation"]


def test_convert_diffusers_folder_to_official_bf16(tmp_path, capsys):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    theirs = diffusers.WanTransformer3DModel(num_attention_heads=1, attention_head_dim=128, text_dim=20,
                                             freq_dim=32, ffn_dim=64, num_layers=2)
    theirs.save_pretrained(tmp_path / "transformer")
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(tmp_path / "transformer"), str(out), "--dtype", "bf16"]) == 0
    with safe_open(str(out), "pt") as f:
        assert "blocks.0.self_attn.q.weight" in f.keys()
        assert f.get_tensor("blocks.0.self_attn.q.weight").dtype == torch.bfloat16
        assert json.loads(f.metadata()["dit_config"])["num_heads"] == 1
    with pytest.warns(UserWarning):  # a plain T2V model, loaded as a FlashI2V base
        assert load(out, "dit").kind == "wan_t2v_dit"


def test_convert_fp8_dit_dequantizes(tmp_path):
    model = tiny_dit()
    state = {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 and k.endswith("weight") else v)
             for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "fp8.safetensors"))
    out = tmp_path / "fp32.safetensors"
    assert main(["convert", str(tmp_path / "fp8.safetensors"), str(out), "--dtype", "fp32"]) == 0
    from_fp8 = load(tmp_path / "fp8.safetensors", "dit").model
    converted = load(out, "dit").model
    with torch.no_grad():  # compare the dense weights the two files describe
        for name, tensor in converted.state_dict().items():
            module = from_fp8.get_submodule(name.rsplit(".", 1)[0])
            expected = module.dequantize(torch.float32) if name.endswith("weight") and hasattr(
                module, "dequantize") else from_fp8.state_dict()[name]
            assert torch.equal(tensor, expected), name


def test_convert_vae_round_trip(tmp_path):
    vae = tiny_vae()
    torch.save(vae.state_dict(), tmp_path / "Wan2.1_VAE.pth")
    out = tmp_path / "vae.safetensors"
    assert main(["convert", str(tmp_path / "Wan2.1_VAE.pth"), str(out), "--dtype", "fp32"]) == 0
    assert load(out, "vae").kind == "wan21_vae"


def test_convert_refuses_a_lora(tmp_path, capsys):
    save_file({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 8)}, str(tmp_path / "l.safetensors"))
    assert main(["convert", str(tmp_path / "l.safetensors"), str(tmp_path / "o.safetensors")]) == 2
    assert "is a LoRA" in capsys.readouterr().err


def test_assert_same_model_is_strict():
    """The comparison helper used by the loading tests does notice a changed weight."""
    a, b = tiny_dit(0), tiny_dit(0)
    with torch.no_grad():
        b.blocks[0].ffn[0].weight[0, 0] += 1e-3
    with pytest.raises(AssertionError):
        assert_same_model(b, a)


def test_adapter_is_identified_and_sent_to_the_vlm_loader(tmp_path, capsys):
    adapter = {"fc1.weight": torch.zeros(64, 56), "fc1.bias": torch.zeros(64),
               "fc2.weight": torch.zeros(64, 64), "fc2.bias": torch.zeros(64)}
    torch.save({"ema": adapter, "step": 10}, tmp_path / "adapter.pt")
    main(["inspect", str(tmp_path / "adapter.pt"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "VLM encoder adapter" and "EMA weights" in report["notes"]
    with pytest.raises(CheckpointError, match="loaded together with its Qwen2.5-VL model"):
        load(tmp_path / "adapter.pt")
    with pytest.raises(CheckpointError, match="is a VLM encoder adapter; expected a FlashI2V"):
        load(tmp_path / "adapter.pt", "dit")


def test_inspect_names_the_one_tensor_that_disagrees(tmp_path, capsys):
    """One damaged tensor: the config comes from the tensors that agree, and the damaged one is named."""
    state = tiny_dit().state_dict()
    state["blocks.1.ffn.0.weight"] = torch.zeros(7, state["blocks.1.ffn.0.weight"].shape[1])
    save_file(state, str(tmp_path / "damaged.safetensors"))
    assert main(["inspect", str(tmp_path / "damaged.safetensors"), "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["config"]["ffn_dim"] == tiny_dit().cfg.ffn_dim
    assert report["problems"] == [f"blocks.1.ffn.0.weight is (7, {state['blocks.1.ffn.0.weight'].shape[1]}), "
                                  f"expected ({tiny_dit().cfg.ffn_dim}, {state['blocks.1.ffn.0.weight'].shape[1]})"]
    assert "would not load" in captured.err and "blocks.1.ffn.0.weight" in captured.err
    with pytest.raises(CheckpointError, match=r"blocks\.1\.ffn\.0\.weight is \(7, "):
        load(tmp_path / "damaged.safetensors", "dit")
    assert main(["convert", str(tmp_path / "damaged.safetensors"), str(tmp_path / "out.safetensors")]) == 2
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("command", [["convert"], ["quantize", "--type", "Q8_0"]])
def test_rewriting_a_file_onto_itself_is_refused(tmp_path, capsys, command):
    path = tmp_path / "dit.safetensors"
    save_file(tiny_dit().state_dict(), str(path))
    before = path.read_bytes()
    assert main([command[0], str(path), str(path), *command[1:]]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert path.read_bytes() == before
