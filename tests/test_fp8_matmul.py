"""The opt-in fp8 matmul (`use_fp8_matmul`): fp8 weights multiplied in fp8 by `torch._scaled_mm`.

PyTorch's CPU kernel runs the same arithmetic as the GPUs' (fp8 codes, float32 sums, both scales), so the
path is checked here against a reference written out by hand; its speed is a GPU matter (docs/benchmarks.md).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from uniworld_core.model.config import DiTConfig
from uniworld_core.model.dit import WanDiT
from uniworld_core.quant import Fp8Linear, fp8_matmul_supported, layers, scaled_fp8_linear, use_fp8_matmul
from uniworld_core.weights.quantize import quantize_file
from uniworld_core.weights.registry import load

E4M3_MAX = 448.0


@pytest.fixture(autouse=True)
def narrow_layers_too(monkeypatch):
    """These layers are narrower than the width where the fp8 matmul pays on a GPU; test the path anyway."""
    monkeypatch.setattr(layers, "FP8_MATMUL_MIN_OUT", 16)


def _fp8_layer(out_features: int, in_features: int, dtype: torch.dtype, per_channel: bool = False,
               weight_dtype: torch.dtype = torch.float8_e4m3fn) -> Fp8Linear:
    gen = torch.Generator().manual_seed(out_features + in_features)
    layer = Fp8Linear(in_features, out_features, True, dtype)
    dense = torch.randn(out_features, in_features, generator=gen) * 0.05
    scale = dense.abs().amax(1, keepdim=True) / E4M3_MAX if per_channel else dense.abs().max() / E4M3_MAX
    layer.weight.data = (dense / scale).to(weight_dtype)
    layer.scale_weight = scale  # per channel: [out, 1], as scaled fp8 files store it
    layer.bias.data = torch.randn(out_features, generator=gen) * 0.1
    return layer


def _by_hand(x: torch.Tensor, layer: Fp8Linear) -> torch.Tensor:
    """Each token's row times 448 / its largest magnitude (that factor in x's dtype), rounded to e4m3,
    multiplied exactly with the weight, the factor undone, rounded to bf16."""
    rows = x.reshape(-1, x.shape[-1])
    inverse = (E4M3_MAX / rows.double().abs().amax(1, keepdim=True)).to(x.dtype)
    codes = (rows * inverse).to(torch.float8_e4m3fn).double()
    weight = layer.weight.double() * layer.scale_weight.double().reshape(-1, 1)
    y = ((codes / inverse.double()) @ weight.t()).to(torch.bfloat16).to(x.dtype)
    return y.reshape(*x.shape[:-1], -1) + layer.bias.to(x.dtype)


def _rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).square().mean().sqrt() / b.double().square().mean().sqrt()).item()


CUDA = pytest.mark.skipif(not torch.cuda.is_available() or not fp8_matmul_supported("cuda"),
                          reason="needs a CUDA GPU of compute capability 8.9+")


CPU = pytest.mark.skipif(not fp8_matmul_supported("cpu"),
                         reason="this PyTorch's CPU _scaled_mm takes only per-tensor scales (2.13's takes row-wise)")


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=CPU), pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("per_channel", [False, True])
def test_the_fp8_matmul_is_fp8_rounded_input_times_the_fp8_weight(dtype, per_channel, device):
    layer = _fp8_layer(48, 64, dtype, per_channel).to(device)
    x = (torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(1)) * 3).to(device, dtype)
    with torch.no_grad():
        upcast = layer(x)
        assert use_fp8_matmul(layer) == 1
        fast = layer(x)
    assert fast.dtype == dtype and fast.shape == (2, 7, 48)
    assert _rel_rms(fast, _by_hand(x, layer)) < 3e-3  # the kernel's float32 sums, then bf16
    # It is the fp8 path (rounding the input costs accuracy), and that cost stays small.
    assert 3e-3 < _rel_rms(fast, upcast) < 0.05
    direct = scaled_fp8_linear(x, layer.weight, layer.scale_weight, layer.bias.to(dtype))
    assert torch.equal(direct, fast)


def test_layers_the_kernel_cannot_run_keep_the_upcast_path():
    odd = _fp8_layer(16, 24, torch.bfloat16)  # 24 input features: not a multiple of the kernel's 16
    e5m2 = _fp8_layer(32, 32, torch.bfloat16, weight_dtype=torch.float8_e5m2)
    model = torch.nn.Sequential(odd, torch.nn.Linear(16, 32), e5m2)
    x = torch.randn(5, 24).to(torch.bfloat16)
    with torch.no_grad():
        model[1].to(torch.bfloat16)
        before = model(x)
        assert use_fp8_matmul(model) == 0
        assert torch.equal(model(x), before)


def test_layers_narrower_than_the_measured_width_keep_the_upcast_path(monkeypatch):
    monkeypatch.setattr(layers, "FP8_MATMUL_MIN_OUT", 4096)
    narrow, wide = _fp8_layer(4080, 32, torch.bfloat16), _fp8_layer(4096, 32, torch.bfloat16)
    x = torch.randn(3, 32).to(torch.bfloat16)
    with torch.no_grad():
        before = narrow(x)
        assert use_fp8_matmul(torch.nn.ModuleList([narrow, wide])) == (1 if fp8_matmul_supported("cpu") else 0)
        assert torch.equal(narrow(x), before)


def test_layers_are_counted_and_switched_for_the_device_they_run_on(monkeypatch):
    """A DiT loaded to the CPU for block swap runs on the GPU: the GPU decides. The CLI and the node switch
    only for a CUDA device (PyTorch's CPU kernel is exact but slow) and say what they did."""
    from uniworld_core import enable_fp8_matmul

    monkeypatch.setattr(layers, "fp8_matmul_supported", lambda device: torch.device(device).type == "cuda")
    wide, other = _fp8_layer(4096, 32, torch.bfloat16), _fp8_layer(4096, 32, torch.bfloat16)
    assert use_fp8_matmul(wide) == 0 and use_fp8_matmul(wide, device="cuda") == 1
    assert enable_fp8_matmul(wide, "cuda") == "fp8 matmul: 1 fp8 linear multiply in fp8" and wide.scaled_matmul
    both = torch.nn.ModuleList([_fp8_layer(4096, 32, torch.bfloat16), other])
    assert enable_fp8_matmul(both, torch.device("cuda", 0)).startswith("fp8 matmul: 2 fp8 linears multiply")
    cpu = _fp8_layer(4096, 32, torch.bfloat16)
    monkeypatch.setattr(layers, "fp8_matmul_supported", lambda device: True)  # 2.13's CPU kernel takes it
    assert "no layer can use it here" in enable_fp8_matmul(cpu, "cpu") and not cpu.scaled_matmul


def test_autograd_keeps_the_upcast_path():
    layer = _fp8_layer(32, 32, torch.float32)
    x = torch.randn(4, 32, requires_grad=True)
    expected = torch.nn.functional.linear(x, layer.dequantize(torch.float32), layer.bias)
    use_fp8_matmul(layer)
    y = layer(x)
    assert torch.equal(y, expected)
    y.sum().backward()
    assert x.grad is not None


@CPU
def test_a_quantised_dit_runs_with_the_fp8_matmul_and_can_switch_back(tmp_path):
    cfg = DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, freq_dim=32, text_dim=32, text_len=16)
    torch.manual_seed(0)
    dense = WanDiT(cfg).eval()
    with torch.no_grad():  # wake the zero-initialised FlashI2V outputs
        for p in dense.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_file(dense.state_dict(), str(tmp_path / "dense.safetensors"))
    path = quantize_file(tmp_path / "dense.safetensors", tmp_path / "fp8.safetensors", "fp8_e4m3fn")
    model = load(path, "dit", dtype=torch.bfloat16).model
    fp8_layers = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    gen = torch.Generator().manual_seed(3)
    x, ff = torch.randn(1, 16, 2, 4, 4, generator=gen), torch.randn(1, 16, 2, 4, 4, generator=gen)
    ctx, t = torch.randn(1, 5, 32, generator=gen), torch.tensor([500.0])
    args = (x.bfloat16(), t, ctx.bfloat16(), ff.bfloat16())
    with torch.no_grad():
        upcast, reference = model(*args), dense(x, t, ctx, ff)
        assert use_fp8_matmul(model) == len(fp8_layers) > 0
        fast = model(*args)
        use_fp8_matmul(model, enabled=False)
        again = model(*args)
    assert torch.equal(again, upcast)
    assert not torch.equal(fast, upcast)
    assert _rel_rms(fast, reference) < 0.1 and _rel_rms(upcast, reference) < 0.1


@CPU
def test_fp16_inputs_of_small_magnitude_stay_finite():
    """448 / amax of a row of 1e-4s overflows fp16: such inputs are scaled in float32."""
    layer = _fp8_layer(32, 64, torch.float16)
    x = (torch.randn(5, 64) * 1e-4).to(torch.float16)
    x[2] = 0  # an all-zero row too
    with torch.no_grad():
        upcast = layer(x)
        use_fp8_matmul(layer)
        fast = layer(x)
    assert torch.isfinite(fast).all() and fast.dtype == torch.float16
    assert torch.equal(fast[2], layer.bias.to(torch.float16))
    assert _rel_rms(fast, upcast) < 0.05


@CPU
def test_a_block_with_the_fp8_matmul_compiles_without_graph_breaks(tmp_path):
    from uniworld_core.model.attention import get_attention
    from uniworld_core.model.compile import graph_breaks
    from uniworld_core.model.rope import rope_tables

    cfg = DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=1, freq_dim=32, text_dim=32, text_len=16)
    save_file(WanDiT(cfg).state_dict(), str(tmp_path / "dense.safetensors"))
    path = quantize_file(tmp_path / "dense.safetensors", tmp_path / "fp8.safetensors", "fp8_e4m3fn")
    model = load(path, "dit", dtype=torch.bfloat16).model
    assert use_fp8_matmul(model) > 0
    gen = torch.Generator().manual_seed(5)
    x, e = torch.randn(2, 12, 64, generator=gen), torch.randn(2, 6, 64, generator=gen)
    context = torch.randn(2, 7, 64, generator=gen).to(torch.bfloat16)
    with torch.no_grad():
        assert graph_breaks(model.blocks[0], x, e, context, rope_tables((3, 2, 2), 32, x.device),
                            get_attention("sdpa", x.device)) == 0
