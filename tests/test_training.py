"""Training: the objective overfits small data in every mode, resumes exactly, exports loadable files."""

from __future__ import annotations

import pytest
import torch
from conftest import Reference, reference_files, relative_error

from training.config import ConfigError, TrainConfig
from training.objective import ObjectiveConfig, flashi2v_loss, weighted_mse
from training.trainer import Trainer
from uniworld_core.model.adapter import EncoderAdapter
from uniworld_core.model.config import DiTConfig
from uniworld_core.model.dit import WanDiT
from uniworld_core.sampling.schedule import training_pair

CFG = DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, freq_dim=32, text_dim=24)
FEATURE_DIM = 12


def clips(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Synthetic cached data: latents of n short clips, their conditioning features, the empty prompt's."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 16, 1, 4, 4, generator=gen)
    latents = base.repeat(1, 1, 2, 1, 1) + 0.3 * torch.randn(n, 16, 2, 4, 4, generator=gen)
    return {"latents": latents, "features": torch.randn(n, 5, FEATURE_DIM, generator=gen) * 2,
            "empty_features": torch.zeros(n, 5, FEATURE_DIM)}


def _model(seed=0) -> WanDiT:
    torch.manual_seed(seed)
    return WanDiT(CFG)


@torch.no_grad()
def _eval_loss(trainer: Trainer, data) -> float:
    """Loss on fixed noise and sigmas (the trainer's schedule, no text drop), comparable step to step."""
    gen = torch.Generator().manual_seed(123)
    context = trainer._context(data["features"])
    empty = trainer._context(data["empty_features"])
    objective = ObjectiveConfig(text_drop=0.0, shift=trainer.objective.shift)
    return float(sum(flashi2v_loss(trainer.dit, data["latents"], context, empty, objective, gen) for _ in range(4)))


def _padded(data: dict) -> dict:
    """Conditioning given to the DiT directly (no adapter): features padded to its text width."""
    data = dict(data)
    data["features"] = torch.nn.functional.pad(data["features"], (0, CFG.text_dim - FEATURE_DIM))
    data["empty_features"] = torch.zeros_like(data["features"])
    return data


def one_image_four_motions(seed: int = 0) -> dict[str, torch.Tensor]:
    """I2V data where only the prompt tells the clips apart: one first frame, four motions."""
    gen = torch.Generator().manual_seed(seed)
    first = torch.randn(1, 16, 1, 4, 4, generator=gen).expand(4, -1, -1, -1, -1)
    later = first + 1.5 * torch.randn(4, 16, 1, 4, 4, generator=gen)
    return {"latents": torch.cat([first, later], 2), "features": torch.randn(4, 5, FEATURE_DIM, generator=gen) * 2,
            "empty_features": torch.zeros(4, 5, FEATURE_DIM)}


def _train(dit, cfg, data, adapter=None) -> tuple[float, float, Trainer]:
    trainer = Trainer(dit, cfg, adapter)
    start = _eval_loss(trainer, data)
    for _ in range(cfg.steps):
        trainer.train_step(data)
    return start, _eval_loss(trainer, data), trainer


def _base(data: dict, shift=None, steps=200) -> dict[str, torch.Tensor]:
    """A trained base DiT (full fine-tuning), as LoRA and adapter training start from one."""
    dit = _model()
    _train(dit, TrainConfig(mode="full", steps=steps, lr=3e-3, text_drop=0.0, weight_decay=0.0, seed=1,
                            shift=shift), _padded(data))
    return {k: v.detach().clone() for k, v in dit.state_dict().items()}


def test_full_fine_tuning_overfits_four_clips():
    start, end, _ = _train(_model(), TrainConfig(mode="full", steps=150, lr=3e-3, text_drop=0.0,
                                                 weight_decay=0.0, seed=1), _padded(clips()))
    assert end < 0.3 * start, f"loss {start:.3f} -> {end:.3f}"


def test_lora_learns_new_clips_on_a_trained_base():
    both = {k: torch.cat([clips(seed=0)[k], clips(seed=5)[k]]) for k in clips()}
    dit = _model()
    dit.load_state_dict(_base(both))
    cfg = TrainConfig(mode="lora", steps=150, lr=1e-2, lora_rank=8, lora_alpha=8, text_drop=0.0,
                      weight_decay=0.0, seed=2)
    start, end, trainer = _train(dit, cfg, _padded(clips(seed=9)))
    assert end < 0.3 * start, f"loss {start:.3f} -> {end:.3f}"
    assert all(not p.requires_grad for p in dit.parameters()), "the base stays frozen"


def test_adapter_learns_the_condition_of_a_frozen_dit():
    """The OSP2.0 recipe in miniature: a new adapter under a frozen FlashI2V DiT."""
    data = one_image_four_motions()
    dit = _model()
    dit.load_state_dict(_base(data, shift=8.0, steps=250))
    cfg = TrainConfig(mode="adapter", steps=150, lr=1e-2, text_drop=0.0, weight_decay=0.0, seed=2, shift=8.0)
    start, end, _ = _train(dit, cfg, data, EncoderAdapter(FEATURE_DIM, 32, CFG.text_dim))
    assert end < 0.3 * start, f"loss {start:.3f} -> {end:.3f}"
    assert all(not p.requires_grad for p in dit.parameters())


def _run(steps: int, folder=None, resume=None, total=8):
    data = _padded(clips())
    data["empty_features"] = torch.zeros_like(data["features"])
    cfg = TrainConfig(mode="lora", steps=total, lr=5e-3, warmup_steps=2, schedule="cosine", text_drop=0.5,
                      lora_rank=4, seed=3, ema_decay=0.9)
    trainer = Trainer(_model(), cfg)
    if resume is not None:
        trainer.load(resume)
    losses = [trainer.train_step(data) for _ in range(steps)]
    if folder is not None:
        trainer.save(folder)
    return trainer, losses


def test_resume_is_bit_exact(tmp_path):
    full, full_losses = _run(8)
    _, first = _run(4, folder=tmp_path / "ckpt")
    resumed, second = _run(4, resume=tmp_path / "ckpt")
    assert first + second == full_losses
    for name, p in full.params.items():
        assert torch.equal(p, resumed.params[name]), name
    for name, t in full.ema.shadow.items():
        assert torch.equal(t, resumed.ema.shadow[name]), name
    assert resumed.step == 8 and resumed.scheduler.get_last_lr() == full.scheduler.get_last_lr()


def test_exported_lora_loads_in_our_loader_and_applying_equals_merging(tmp_path):
    from uniworld_core.weights.lora import applied, read_lora

    trainer, _ = _run(3)
    path = trainer.export(tmp_path, use_ema=False)
    base = _model()  # the same base weights, without the training hooks
    patches = read_lora(path, base, strength=1.0)
    assert sorted(patches) == sorted(trainer.lora.names)
    x = torch.randn(1, 16, 2, 4, 4)
    inputs = (x, torch.tensor([400.0]), torch.randn(1, 5, CFG.text_dim), torch.randn_like(x))
    with torch.no_grad():
        with applied(base, patches):
            on_the_fly = base(*inputs)
        trained = trainer.dit(*inputs)  # the trainer's own hooks
        merged = _model()
        for name, items in patches.items():
            merged.get_submodule(name).weight += items[0].delta(torch.float32, x.device)
        assert torch.allclose(on_the_fly, trained, atol=1e-5, rtol=1e-5)
        assert torch.allclose(merged(*inputs), on_the_fly, atol=1e-5, rtol=1e-5)


def test_adapter_export_is_the_official_layout(tmp_path):
    from uniworld_core.weights.vlm import load_adapter

    adapter = EncoderAdapter(FEATURE_DIM, 32, CFG.text_dim)
    trainer = Trainer(_model(), TrainConfig(mode="adapter", steps=2), adapter)
    trainer.train_step(clips())
    loaded = load_adapter(trainer.export(tmp_path), vlm_hidden=FEATURE_DIM)
    x = torch.randn(2, 3, FEATURE_DIM)
    expected = {n.removeprefix("adapter."): t for n, t in trainer.ema.shadow.items()}
    assert torch.allclose(loaded(x), torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(
        x, expected["fc1.weight"], expected["fc1.bias"])), expected["fc2.weight"], expected["fc2.bias"]))


@pytest.mark.parametrize("field,value", [("mode", "dreambooth"), ("lr", 0.0), ("ema_decay", 1.0),
                                         ("schedule", "linear"), ("mixed_precision", "fp8")])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        TrainConfig(**{field: value})


def test_unknown_setting_in_a_config_file(tmp_path):
    (tmp_path / "c.json").write_text('{"mode": "lora", "learning_rate": 1e-4}')
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_file(tmp_path / "c.json")


REFS = reference_files("flashi2v_ref_*.safetensors")


@pytest.mark.parametrize("path", REFS, ids=lambda p: p.name)
def test_training_pair_reproduces_the_reference(path):
    ref = Reference(path)
    dit = WanDiT(DiTConfig.from_dict(ref.meta["dit_config"])).eval()
    dit.load_state_dict(ref.with_prefix("weight."))
    t = ref.tensors
    with torch.no_grad():
        x_t, target = training_pair(t["train.in.clean"], t["train.in.noise"], t["train.in.sigma"],
                                    dit.learnable_proj(t["fourier.in.start_frame_latents"]))
    assert relative_error(x_t, t["train.out.x_t"]) <= 1e-4
    assert relative_error(target, t["train.out.target"]) <= 1e-4


def test_weighted_mse_counts_marked_cells_region_weight_more():
    target = torch.full((1, 3, 2, 2, 2), 2.0)
    mask = torch.zeros(1, 1, 2, 2, 2)
    mask[..., 0, 0] = 1  # 2 of 8 cells, error 1 there and 2 elsewhere
    target[..., 0, 0] = 1.0
    loss = weighted_mse(torch.zeros_like(target), target, 1 + 3.0 * mask)
    expected = (6 * 4.0 + 2 * 4 * 1.0) / (6 + 2 * 4)  # per cell: weight x squared error, over the weights
    assert float(loss) == pytest.approx(expected)


def test_region_weighted_loss_is_the_plain_loss_when_off_or_uniform_and_differs_otherwise():
    data = _padded(clips())
    dit = _model()
    mask = torch.zeros(4, 1, *data["latents"].shape[2:])
    mask[..., :2, :2] = 1

    def loss(weight: float, region) -> float:
        cfg = ObjectiveConfig(text_drop=0.0, region_weight=weight)
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            return float(flashi2v_loss(dit, data["latents"], data["features"], data["empty_features"], cfg, gen,
                                       mask=region))

    plain = loss(0.0, None)
    assert loss(0.0, mask) == plain  # off: the mask is ignored
    assert loss(5.0, torch.ones_like(mask)) == pytest.approx(plain, rel=1e-5)  # uniform weights change nothing
    assert abs(loss(5.0, mask) - plain) > 1e-3 * plain


def test_trainer_weights_the_cached_loss_mask():
    data = _padded(clips())
    data["loss_mask"] = torch.zeros(4, 1, *data["latents"].shape[2:])
    data["loss_mask"][..., 0, :] = 1
    first = []
    for weight in (0.0, 4.0):
        trainer = Trainer(_model(), TrainConfig(mode="full", steps=1, lr=1e-3, seed=1, region_weight=weight))
        first.append(trainer.train_step(data))
    assert abs(first[0] - first[1]) > 1e-4 * first[0], first
