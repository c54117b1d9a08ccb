"""Block swap and the VRAM planner."""

from __future__ import annotations

import pytest
import torch
from test_loading import dit_inputs, tiny_dit

from uniworld_core.memory.blockswap import BlockSwap
from uniworld_core.memory.planner import activation_bytes, plan_block_swap
from uniworld_core.model.config import DIT_PRESETS, DiTConfig
from uniworld_core.model.dit import WanDiT

CFG = DiTConfig(dim=128, ffn_dim=64, num_heads=1, num_layers=6, freq_dim=32, text_dim=20)


def _out(model):
    with torch.no_grad():
        return model(*dit_inputs(model.cfg))


@pytest.mark.parametrize("swapped,prefetch", [(6, 1), (4, 2), (3, 0)])
def test_block_swap_is_bit_identical_to_the_resident_model(swapped, prefetch):
    model = tiny_dit(cfg=CFG)
    expected = _out(model)
    swap = BlockSwap(model.blocks, swapped, "cpu", prefetch)
    for index in range(swapped):  # off the device between uses: an empty placeholder
        assert all(p.numel() == 0 for p in model.blocks[index].parameters())
    assert all(p.numel() > 0 for p in model.blocks[swapped:].parameters()) if swapped < 6 else True
    for _ in range(2):  # two sampling steps
        assert torch.equal(_out(model), expected)
    assert swap.stats.max_loaded <= 1 + prefetch
    assert swap.stats.waited_loads == (1 if prefetch else 2 * swapped)
    swap.remove()
    assert torch.equal(_out(model), expected)


def test_block_swap_with_gguf_blocks(tmp_path):
    from safetensors.torch import save_file

    from uniworld_core.weights.quantize import quantize_file
    from uniworld_core.weights.registry import load

    save_file(tiny_dit(cfg=CFG).state_dict(), str(tmp_path / "dit.safetensors"))
    model = load(quantize_file(tmp_path / "dit.safetensors", tmp_path / "dit.gguf", "Q8_0"), "dit").model
    expected = _out(model)
    BlockSwap(model.blocks, 4, "cpu", 1)
    assert torch.equal(_out(model), expected)


def _fp8_dit(tmp_path):
    from safetensors.torch import save_file

    from uniworld_core.weights.quantize import quantize_file
    from uniworld_core.weights.registry import load

    save_file(tiny_dit(cfg=CFG).state_dict(), str(tmp_path / "dit.safetensors"))
    return load(quantize_file(tmp_path / "dit.safetensors", tmp_path / "fp8.safetensors", "fp8_e4m3fn"), "dit").model


def test_a_swap_unit_moves_the_buffers_and_leaves_the_weights(tmp_path, monkeypatch):
    """fp8 scales are buffers: they go to the device with the swap, since a layer whose weight arrives on a
    GPU while its scale stays in CPU RAM fails (found on an H200 with the fp8 matmul)."""
    from uniworld_core.memory import offload

    block = _fp8_dit(tmp_path).blocks[0]
    moved = []
    monkeypatch.setattr(offload, "move_buffers", lambda module, device: moved.append((module, device)))
    offload.SwapUnit(block, torch.device("cpu"))
    assert moved == [(block, torch.device("cpu"))]
    monkeypatch.undo()
    offload.move_buffers(block, "meta")  # the meta device stands in for a GPU: anything left behind shows
    assert all(b.device.type == "meta" for b in block.buffers()) and any(True for _ in block.buffers())
    assert all(p.device.type == "cpu" for p in block.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: fp8 blocks streamed to a GPU")
def test_fp8_blocks_swap_to_cuda_with_and_without_the_fp8_matmul(tmp_path):
    from uniworld_core.quant import use_fp8_matmul

    model = _fp8_dit(tmp_path)
    inputs = [t.cuda() for t in dit_inputs(CFG)]
    BlockSwap(model.blocks, 4, "cuda", 1)
    for name, module in model.named_children():
        if name != "blocks":
            module.cuda()
    with torch.no_grad():
        upcast = model(*inputs)
        use_fp8_matmul(model)
        fast = model(*inputs)
    assert torch.isfinite(fast).all()
    assert ((fast - upcast).norm() / upcast.norm()).item() < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for streams and pinned memory")
def test_block_swap_on_cuda_uses_a_copy_stream_and_pinned_memory():
    model = tiny_dit(cfg=CFG).cuda()
    with torch.no_grad():
        expected = model(*(t.cuda() for t in dit_inputs(CFG)))
    swap = BlockSwap(model.blocks, 4, "cuda", 1)
    assert swap.copy_stream is not None and all(t.is_pinned() for s in swap.units.values() for t in s.store.values())
    with torch.no_grad():
        assert torch.equal(model(*(t.cuda() for t in dit_inputs(CFG))), expected)


def test_planner_swaps_more_for_less_memory_and_bigger_videos():
    with torch.device("meta"):
        model = WanDiT(DIT_PRESETS["14B"]).to(torch.bfloat16)
    grid = (13, 60, 104)  # 480x832, 49 frames
    roomy = plan_block_swap(model, 200 * 2**30, grid)
    tight = plan_block_swap(model, 24 * 2**30, grid)
    tighter = plan_block_swap(model, 12 * 2**30, grid)
    assert roomy.swapped == 0
    assert 0 < tight.swapped < tighter.swapped <= 40
    assert tight.needed_bytes <= 24 * 2**30
    bigger = plan_block_swap(model, 24 * 2**30, (21, 90, 160))
    assert bigger.swapped > tight.swapped
    assert plan_block_swap(model, 24 * 2**30, grid, override=7).swapped == 7
    assert "blocks resident" in tight.summary()


def test_activation_estimate_scales_with_tokens():
    cfg = DIT_PRESETS["1.3B"]
    assert activation_bytes(cfg, (13, 60, 104)) == pytest.approx(2 * activation_bytes(cfg, (13, 60, 52)), rel=1e-6)


# ---- placement in the core: one call plans, swaps and keeps the swap

def test_place_dit_swaps_the_asked_blocks_and_keeps_the_swap():
    from uniworld_core import place_dit

    model = tiny_dit(cfg=CFG)
    expected = _out(model)
    placed = place_dit(model, "cpu", blocks_to_swap=3, prefetch=1, latent_grid=(2, 4, 4))
    assert placed.swapped == 3 and placed.plan.swapped == 3
    assert all(p.numel() == 0 for p in model.blocks[0].parameters())
    assert torch.equal(_out(model), expected)
    assert placed.stats.loads == 4 and placed.stats.copy_bytes > 0  # 3 blocks + block 0 prefetched for the next step
    assert "3 swapped" in placed.summary()
    placed.remove()
    assert placed.swapped == 0 and all(p.numel() > 0 for p in model.parameters())
    assert torch.equal(_out(model), expected)


def test_place_dit_plans_from_a_budget_and_stays_resident_without_one():
    from uniworld_core import InputError, place_dit

    model = tiny_dit(cfg=CFG)
    resident = place_dit(model, "cpu")  # the CPU has no budget to plan against: nothing swapped
    assert resident.swap is None and resident.swapped == 0 and "all 6 blocks" in resident.summary()
    block = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())
    tight = place_dit(tiny_dit(cfg=CFG), "cpu", budget_bytes=4 * block, latent_grid=(1, 2, 2))
    assert 0 < tight.swapped <= 6, tight.summary()
    roomy = place_dit(tiny_dit(cfg=CFG), "cpu", budget_bytes=2**34, latent_grid=(1, 2, 2))
    assert roomy.swapped == 0
    with pytest.raises(InputError, match="blocks_to_swap"):
        place_dit(tiny_dit(cfg=CFG), "cpu", blocks_to_swap=-2)
