"""The fast paths give the numbers of the plain ones: dequantisation, shared buffers, attention, compile, loading."""

from __future__ import annotations

import math
import shutil
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tiny_models import dit_inputs, tiny_dit

from uniworld_core.memory.blockswap import BlockSwap
from uniworld_core.model.attention import MeasuredAttention, chunked_attention, sdpa_attention
from uniworld_core.model.compile import compile_blocks, graph_breaks, uncompile_blocks
from uniworld_core.model.config import DiTConfig
from uniworld_core.model.dit import WanDiT
from uniworld_core.model.rope import rope_tables
from uniworld_core.quant import gguf_decode
from uniworld_core.quant.gguf_decode import BLOCKS, dequantize
from uniworld_core.quant.layers import SHARED, Fp8Linear, GGUFConv3d, GGUFLinear
from uniworld_core.sampling.sampler import SamplerSettings, sample
from uniworld_core.weights import containers
from uniworld_core.weights.containers import open_weights
from uniworld_core.weights.quantize import quantize_file
from uniworld_core.weights.registry import load

HALF_FIELDS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q2_K": [80, 82],
               "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
K_CFG = DiTConfig(dim=256, ffn_dim=256, num_heads=2, num_layers=2, freq_dim=32, text_dim=20)


def random_blocks(name: str, blocks: int, seed: int = 0) -> torch.Tensor:
    """Random GGUF blocks of a type with sane fp16 scales (every code pattern occurs)."""
    rng = np.random.default_rng(seed)
    block_bytes = BLOCKS[name][1]
    raw = rng.integers(0, 256, size=(blocks, block_bytes), dtype=np.uint8)
    for start in HALF_FIELDS[name]:
        raw[:, start:start + 2] = rng.uniform(-0.1, 0.1, (blocks, 1)).astype(np.float16).view(np.uint8)
    return torch.from_numpy(raw)


@pytest.mark.parametrize("name", list(HALF_FIELDS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dequantising_to_half_precision_rounds_the_float32_values_once(name, dtype):
    """bf16/fp16 values equal the float32 ones (bit-exact with gguf's numpy, tested elsewhere) cast once."""
    per_block = BLOCKS[name][0]
    raw = random_blocks(name, 64)
    shape = (64 * per_block // 256, 256)
    expected = dequantize(raw, name, shape, torch.float32).to(dtype)
    assert torch.equal(dequantize(raw, name, shape, dtype), expected)
    # into reused buffers that hold other numbers: the same values
    out, work = torch.full((shape[0] * shape[1] + 7,), 3.0, dtype=dtype), torch.full((shape[0] * shape[1],), -1.0)
    assert torch.equal(dequantize(raw, name, shape, dtype, out=out, work=work), expected)


@pytest.mark.parametrize("name", list(HALF_FIELDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantising_in_cache_sized_chunks_gives_the_same_values(name, dtype, monkeypatch):
    """On the CPU a tensor is decoded a chunk of blocks at a time, with a work buffer of one chunk."""
    raw = random_blocks(name, 23, seed=5)
    shape = (23 * BLOCKS[name][0] // 16, 16)
    whole = dequantize(raw, name, shape, dtype)  # 23 blocks: one chunk at the default size
    monkeypatch.setattr(gguf_decode, "CPU_CHUNK_VALUES", 3 * BLOCKS[name][0])  # 8 chunks, the last short
    needed = gguf_decode.work_numel(name, dtype, whole.numel(), raw.device)
    per_block = BLOCKS[name][0]
    assert needed == 0 or (needed % per_block == 0 and needed <= 3 * per_block), \
        "the work buffer holds one chunk (of at most CPU_CHUNK_VALUES values), not the tensor"
    assert (needed == 0) == (dtype == torch.float32), "on the CPU half precision goes through float32 work"
    out = torch.full((whole.numel() + 5,), 7.0, dtype=dtype)
    work = torch.full((max(needed, 1),), -3.0)
    assert torch.equal(dequantize(raw, name, shape, dtype, out=out, work=work), whole)
    assert torch.equal(dequantize(raw, name, shape, dtype), whole)


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q5_0"])
def test_fp16_computed_in_place_rounds_once_like_float32(name, monkeypatch):
    """Off the CPU, fp16 Q8_0/Q4_0/Q5_0 skip the float32 work buffer: d * q rounds once in fp16 arithmetic."""
    raw = random_blocks(name, 40, seed=9)
    shape = (40 * 32 // 64, 64)
    expected = dequantize(raw, name, shape, torch.float32).to(torch.float16)
    exact = gguf_decode._exact_in
    monkeypatch.setattr(gguf_decode, "_in_place", lambda type_name, dtype, device: exact(dtype, type_name))
    assert gguf_decode.work_numel(name, torch.float16, 40 * 32, raw.device) == 0
    assert torch.equal(dequantize(raw, name, shape, torch.float16), expected)


def _gguf_linear(name: str, out_features: int, in_features: int, seed: int) -> GGUFLinear:
    layer = GGUFLinear(in_features, out_features, True, name, torch.float32)
    blocks = out_features * in_features // BLOCKS[name][0]
    layer.weight = torch.nn.Parameter(random_blocks(name, blocks, seed).reshape(-1), requires_grad=False)
    layer.bias.data.normal_()
    return layer


def test_gguf_layers_share_one_buffer_and_each_sees_its_own_weight():
    first, second = _gguf_linear("Q4_K", 48, 256, 1), _gguf_linear("Q8_0", 256, 48, 2)
    x = torch.randn(5, 256)
    dense1, dense2 = first.dequantize(torch.float32), second.dequantize(torch.float32)
    expected = F.linear(F.linear(x, dense1, first.bias), dense2, second.bias)
    SHARED.clear()
    with torch.no_grad():
        out = second(first(x))
        again = second(first(x))
    assert SHARED.nbytes() >= 256 * 48 * 4, "inference writes weights into the shared buffer"
    assert torch.equal(out, expected) and torch.equal(again, expected)
    assert first.dequantize(torch.float32) is not first.dequantize(torch.float32), "dequantize() owns its result"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gguf_layers_in_half_precision_share_a_work_buffer_of_one_chunk(dtype, monkeypatch):
    """A linear and a conv in bf16/fp16, decoded in several chunks through the shared float32 work buffer."""
    monkeypatch.setattr(gguf_decode, "CPU_CHUNK_VALUES", 2 * 256)
    linear = _gguf_linear("Q4_K", 48, 256, 6).to(dtype)
    conv = torch.nn.Conv3d(4, 8, (1, 4, 4), bias=True)
    gconv = GGUFConv3d(conv, "Q6_K", dtype)
    gconv.weight = torch.nn.Parameter(random_blocks("Q6_K", 8 * 4 * 16 // 256, 7).reshape(-1), requires_grad=False)
    gconv.bias.data = gconv.bias.data.to(dtype)
    x, video = torch.randn(5, 256, dtype=dtype), torch.randn(1, 4, 2, 6, 6, dtype=dtype)
    expected = F.linear(x, dequantize(linear.weight, "Q4_K", (48, 256), torch.float32).to(dtype), linear.bias)
    expected_conv = F.conv3d(video, dequantize(gconv.weight, "Q6_K", (8, 4, 1, 4, 4), torch.float32).to(dtype),
                             gconv.bias)
    SHARED.clear()
    with torch.no_grad():
        assert torch.equal(linear(x), expected) and torch.equal(gconv(video), expected_conv)
    work = [b for (_, d, role), b in SHARED._buffers.items() if role == "work"]
    assert len(work) == 1 and work[0].dtype == torch.float32 and work[0].numel() == 2 * 256
    with pytest.raises(ValueError, match="work_numel"):
        dequantize(linear.weight, "Q4_K", (48, 256), dtype, work=torch.empty(100))


def test_gguf_layers_under_autograd_keep_their_own_weights():
    """Backward needs each layer's weight after the next layer ran: no shared buffer with autograd on."""
    first, second = _gguf_linear("Q4_K", 48, 256, 3), _gguf_linear("Q6_K", 256, 48, 4)
    x = torch.randn(5, 256, requires_grad=True)
    second(first(x)).square().sum().backward()
    ref_x = x.detach().clone().requires_grad_()
    dense1, dense2 = first.dequantize(torch.float32), second.dequantize(torch.float32)
    F.linear(F.linear(ref_x, dense1, first.bias), dense2, second.bias).square().sum().backward()
    assert torch.allclose(x.grad, ref_x.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fp8_linear_in_a_buffer_equals_float32_then_cast(dtype):
    layer = Fp8Linear(32, 16, True, dtype)
    layer.weight.data = (torch.randn(16, 32) * 3).to(torch.float8_e4m3fn)
    layer.scale_weight.data = torch.tensor(0.0123)
    expected = (layer.weight.float() * layer.scale_weight).to(dtype)
    assert torch.equal(layer.dequantize(dtype, torch.empty(600, dtype=dtype)), expected)


def _softmax_attention(q, k, v):
    """Independent formulation, float64."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights @ v).transpose(1, 2)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_chunked_attention_is_attention(dtype, tolerance):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 3, 16, generator=gen) for n in (37, 23, 23))
    expected = _softmax_attention(q, k, v)
    small = 2 * 3 * 23 * 4 * 5  # room for 5 query rows of scores: 8 chunks
    out = chunked_attention(q.to(dtype), k.to(dtype), v.to(dtype), max_score_bytes=small)
    assert out.dtype == dtype and out.shape == q.shape
    assert ((out.double() - expected).norm() / expected.norm()).item() < tolerance


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_bf16_score_attention_is_attention(dtype, tolerance):
    from uniworld_core.model.attention import bf16_score_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 3, 16, generator=gen) for n in (37, 23, 23))
    expected = _softmax_attention(q, k, v)
    small = 2 * 3 * 23 * torch.tensor([], dtype=dtype).element_size() * 5  # 5 query rows of scores: 8 chunks
    out = bf16_score_attention(q.to(dtype), k.to(dtype), v.to(dtype), max_score_bytes=small)
    assert out.dtype == dtype and out.shape == q.shape
    assert ((out.double() - expected).norm() / expected.norm()).item() < tolerance
    whole = bf16_score_attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert torch.allclose(out.float(), whole.float(), atol=1e-6)  # chunks change nothing


def test_the_cpu_auto_attention_gives_bf16_its_scores_and_the_rest_sdpa():
    from uniworld_core.model.attention import bf16_score_attention, cpu_bf16_scores_attention

    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 9, 2, 8, generator=gen) for _ in range(3))
    assert torch.equal(cpu_bf16_scores_attention(q, k, v), sdpa_attention(q, k, v))
    low = [t.bfloat16() for t in (q, k, v)]
    assert torch.equal(cpu_bf16_scores_attention(*low), bf16_score_attention(*low))


def test_measured_attention_times_once_per_case_and_keeps_the_fastest():
    calls, messages = [], []

    def slow(q, k, v):
        calls.append("slow")
        time.sleep(0.02)
        return q

    def fast(q, k, v):
        calls.append("fast")
        return q

    auto = MeasuredAttention({"slow": slow, "fast": fast}, messages.append)
    q = torch.zeros(1, 4, 2, 8)
    for _ in range(3):
        auto(q, q, q)
    auto(q, q[:, :2], q[:, :2])  # another key length: measured again
    assert list(auto.choices.values()) == ["fast", "fast"]
    # per case 3 runs of each while measuring; then every call, the measuring one included, runs 'fast'
    assert calls.count("slow") == 2 * 3 and calls.count("fast") == 2 * 3 + 3 + 1
    assert len(messages) == 2 and "fast (measured: slow" in messages[0]


def _block_inputs(model: WanDiT, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3 * 4 * 4, model.cfg.dim, generator=gen)
    e = torch.randn(2, 6, model.cfg.dim, generator=gen)
    context = torch.randn(2, 7, model.cfg.dim, generator=gen).to(dtype)
    return x, e, context, rope_tables((3, 4, 4), model.cfg.head_dim, x.device), model.attention


def _quantised(tmp_path, kind: str, dtype: torch.dtype = torch.float32) -> WanDiT:
    torch.manual_seed(0)
    model = WanDiT(K_CFG).eval()
    save_file(model.state_dict(), str(tmp_path / "dense.safetensors"))
    suffix = ".gguf" if kind.startswith("Q") else ".safetensors"
    return load(quantize_file(tmp_path / "dense.safetensors", tmp_path / f"q{suffix}", kind), "dit",
                dtype=dtype).model


@pytest.mark.parametrize("kind", ["bf16", "Q8_0", "Q4_K", "fp8_e4m3fn"])
def test_the_block_compiles_without_graph_breaks(kind, tmp_path):
    if kind == "bf16":
        model = tiny_dit()
        model = model.to(torch.bfloat16)
        dtype = torch.bfloat16
    else:
        model, dtype = _quantised(tmp_path, kind), torch.float32
    with torch.no_grad():
        assert graph_breaks(model.blocks[0], *_block_inputs(model, dtype)) == 0


def _run(model: WanDiT) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    noise, start = torch.randn(1, 16, 3, 8, 8, generator=gen), torch.randn(1, 16, 1, 8, 8, generator=gen)
    context, negative = (torch.randn(1, 5, model.cfg.text_dim, generator=gen) for _ in range(2))
    dtype = model.patch_embedding.weight.dtype
    return sample(model, noise, start, context.to(dtype), negative.to(dtype),
                  SamplerSettings(steps=3, shift=3.0, guidance_scale=2.0))


@pytest.mark.parametrize("swap", [0, 2])
def test_a_sampling_run_compiles_the_block_once(swap, tmp_path):
    """Every block and every step (cond+uncond batched) reuses one graph, with GGUF layers and block swap."""
    model = _quantised(tmp_path, "Q4_K")
    if swap:
        BlockSwap(model.blocks, swap, "cpu")
    eager = _run(model)
    messages = []
    state = compile_blocks(model, backend="eager", log=messages.append)
    compiled = _run(model)
    assert state.compiles == 1 and state.failed is None
    # traced, RoPE takes its real form (eager: one complex product): float32 rounding apart
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-5)
    uncompile_blocks(model)
    assert torch.equal(_run(model), eager) and "forward" not in model.blocks[0].__dict__


def test_measured_attention_is_decided_eagerly_before_the_block_compiles():
    model = tiny_dit()
    eager = _run(model)
    model.attention = MeasuredAttention({"sdpa": sdpa_attention, "chunked": chunked_attention}, lambda m: None)
    state = compile_blocks(model, backend="eager", log=lambda m: None)
    compiled = _run(model)
    assert state.compiles == 1 and state.failed is None
    assert len(model.attention.choices) == 2, "self- and cross-attention measured on the first (eager) block"
    assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-5)


def test_blocks_whose_attention_is_replaced_for_now_run_eagerly():
    """A sampling cache swaps in its own self-attention per step: no trace of its Python state."""
    model = tiny_dit()
    eager = _run(model)
    state = compile_blocks(model, backend="eager", log=lambda m: None)
    calls = []
    for block in model.blocks:
        original = block.self_attn.forward
        block.self_attn.forward = lambda *a, original=original, **k: calls.append(1) or original(*a, **k)
    assert torch.equal(_run(model), eager) and calls and state.compiles == 0
    for block in model.blocks:
        del block.self_attn.forward
    _run(model)
    assert state.compiles == 1


def test_a_failing_compiler_falls_back_to_eager_with_a_message():
    model = tiny_dit()
    eager = _run(model)

    def broken(graph_module, example_inputs):
        raise RuntimeError("no C++ compiler found")

    messages = []
    state = compile_blocks(model, backend=broken, log=messages.append)
    assert torch.equal(_run(model), eager)
    assert state.failed is not None and "no C++ compiler found" in state.failed
    assert "run uncompiled" in messages[-1]


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None,
                    reason="inductor on the CPU needs a C++ compiler")
def test_inductor_compiled_blocks_match_eager_in_bf16():
    model = tiny_dit().to(torch.bfloat16)
    with torch.no_grad():
        eager = model(*dit_inputs(model.cfg))
        state = compile_blocks(model)
        compiled = model(*dit_inputs(model.cfg))
    assert state.compiles == 1 and state.failed is None
    assert ((compiled - eager).norm() / eager.norm()).item() < 1e-2


def test_converted_reads_hold_the_converted_file_values(tmp_path, monkeypatch):
    """Tensors converted as they are read (the float32 policy on a bf16 file), in several chunks."""
    monkeypatch.setattr(containers, "CONVERT_CHUNK_BYTES", 1000)
    state = {"a": torch.randn(3, 1000).bfloat16(), "module.b": torch.randn(70001).half()}
    save_file(state, str(tmp_path / "m.safetensors"))
    wf = open_weights(tmp_path / "m.safetensors")
    assert torch.equal(wf.dense("a", torch.float32), state["a"].float())
    assert torch.equal(wf.dense("b", torch.bfloat16), state["module.b"].bfloat16())  # wrapper prefix stripped


def test_a_low_precision_model_computes_the_time_mlp_in_float32_from_its_stored_weights(tmp_path):
    """bf16 file, bf16 model: the time MLP keeps its bf16 storage and gives the numbers of float32 copies."""
    save_file({k: v.bfloat16() for k, v in tiny_dit().state_dict().items()}, str(tmp_path / "dit.safetensors"))
    model = load(tmp_path / "dit.safetensors", "dit", dtype=torch.bfloat16).model
    assert model.time_projection[1].weight.dtype == torch.bfloat16
    assert model.blocks[0].modulation.dtype == torch.float32 and model.blocks[0].norm3.weight.dtype == torch.float32
    inputs = [t.bfloat16() if t.is_floating_point() and t.ndim > 1 else t for t in dit_inputs(model.cfg)]
    with torch.no_grad():
        stored = model(*inputs)
        for layer in (model.time_embedding[0], model.time_embedding[2], model.time_projection[1]):
            layer.float()
        assert torch.equal(model(*inputs), stored)
    training = load(tmp_path / "dit.safetensors", "dit", dtype=torch.float32).model
    assert training.time_projection[1].weight.dtype == torch.float32, "a float32 model holds float32"


def test_a_measuring_attention_is_seen_through_a_sequence_parallel_wrapper():
    """Compiled blocks run eagerly on a new size while `measure` chooses, also when sequence parallelism wraps it."""
    from types import SimpleNamespace

    from uniworld_core.model.attention import MeasuredAttention, sdpa_attention
    from uniworld_core.model.compile import _measuring

    measured = MeasuredAttention({"sdpa": sdpa_attention})
    assert _measuring([measured, None]) and _measuring([sdpa_attention, SimpleNamespace(inner=measured)])
    assert not _measuring([sdpa_attention, SimpleNamespace(inner=sdpa_attention)]) and not _measuring([None])
